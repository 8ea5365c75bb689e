"""PAM password checks through python-pam's libpam bindings.

The sequence is ``pam_start`` (PAM service, user), ``pam_set_item(PAM_RHOST,
client address)`` so that PAM modules (pam_access, pam_exec, logging) see
where the login comes from, ``pam_authenticate`` and ``pam_acct_mgmt``
(expired or locked accounts fail), ``pam_end``. python-pam's one-call
``authenticate()`` cannot set the remote host, so its bindings are driven
here directly; one handle per call, so calls run in parallel on threads
(ctypes releases the GIL).

PAM's own failure delay (``pam_fail_delay``: pam_unix without ``nodelay``
asks for about 2 s after a wrong password) is replaced by a
``PAM_FAIL_DELAY`` callback that does not sleep, as Linux-PAM allows an
application to do (``pam_set_item(3)``): otherwise a wrong password would
come back seconds later than a right one from a forbidden network. Every
failure is delayed by the frontend's fixed deadline instead
(:mod:`saslnetauth.policy.deadline`).

Results: PAM_SUCCESS -> True; an authentication or account refusal
(wrong password, unknown user, expired, locked, ...) -> False; anything
else (PAM misconfigured, module error) -> :class:`BackendError`, i.e.
TEMPFAIL, never OK.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from saslnetauth.errors import BackendError

__all__ = ["PamAuth"]

#: Linux-PAM's item number of the failure-delay callback (security/_pam_types.h).
PAM_FAIL_DELAY = 10

# Linux-PAM return codes that mean "this login is refused" (security/_pam_types.h).
_REFUSED = {
    "PAM_AUTH_ERR",
    "PAM_USER_UNKNOWN",
    "PAM_MAXTRIES",
    "PAM_CRED_INSUFFICIENT",
    "PAM_ACCT_EXPIRED",
    "PAM_PERM_DENIED",
    "PAM_NEW_AUTHTOK_REQD",
    "PAM_AUTHTOK_EXPIRED",
    "PAM_CRED_EXPIRED",
}


class PamAuth:
    """Verifies passwords with the PAM service ``service`` (``/etc/pam.d/<service>``)."""

    def __init__(self, service: str = "saslnetauth") -> None:
        if not service or "/" in service or "\x00" in service:
            raise ValueError(f"invalid PAM service name {service!r}")
        self.service = service
        self._lock = threading.Lock()
        self._mod: Any = None

    def _pam(self) -> Any:
        if self._mod is None:
            with self._lock:
                if self._mod is None:
                    try:  # python-pam's bindings (by name: inside a class, __x is mangled)
                        internals = importlib.import_module("pam.__internals")
                    except ImportError as exc:
                        raise BackendError(f"python-pam is not available: {exc}") from None
                    self._mod = internals
        return self._mod

    def verify(self, user: str, password: bytes, rip: str | None, service: str) -> bool:
        pam = self._pam()
        from ctypes import byref, c_char_p, c_void_p, cast, py_object

        delay_fn = _no_delay_callback()

        if b"\x00" in password or "\x00" in user:
            return False
        auth = pam.PamAuthenticator()
        app_data = {"msgs": [], "password": password, "encoding": "utf-8"}

        @pam.conv_func  # type: ignore[untyped-decorator]
        def conv(n: int, messages: Any, p_response: Any, data: Any) -> int:
            d = cast(data, py_object).value
            return int(
                pam.my_conv(n, messages, p_response, auth.libc, d["msgs"], d["password"], "utf-8")
            )

        keep = py_object(app_data)
        pconv = pam.PamConv(conv, c_void_p.from_buffer(keep))
        handle = pam.PamHandle()
        rv = auth.pam_start(
            self.service.encode(),
            user.encode("utf-8", "surrogateescape"),
            byref(pconv),
            byref(handle),
        )
        if rv != pam.PAM_SUCCESS:
            raise BackendError(f"pam_start failed for service {self.service}: code {rv}")
        try:
            rv = auth.pam_set_item(handle, PAM_FAIL_DELAY, cast(delay_fn, c_void_p))
            if rv != pam.PAM_SUCCESS:
                raise BackendError(f"PAM service {self.service}: cannot set PAM_FAIL_DELAY")
            if rip:
                auth.pam_set_item(handle, pam.PAM_RHOST, c_char_p(rip.encode("ascii", "replace")))
            rv = auth.pam_authenticate(handle, 0)
            if rv == pam.PAM_SUCCESS:
                rv = auth.pam_acct_mgmt(handle, 0)
        finally:
            auth.pam_end(handle, rv)
        if rv == pam.PAM_SUCCESS:
            return True
        refused = {getattr(pam, name, None) for name in _REFUSED}
        if rv in refused:
            return False
        raise BackendError(f"PAM service {self.service} failed with code {rv}")


_DELAY_CALLBACK: list[Any] = []


def _no_delay_callback() -> Any:
    """``void delay(int retval, unsigned usec_delay, void *appdata)`` that returns
    at once (made once and kept alive for the process: libpam holds the pointer)."""
    if not _DELAY_CALLBACK:
        from ctypes import CFUNCTYPE, c_int, c_uint, c_void_p

        @CFUNCTYPE(None, c_int, c_uint, c_void_p)  # type: ignore[untyped-decorator]
        def no_delay(retval: int, usec: int, appdata: int | None) -> None:
            return None

        _DELAY_CALLBACK.append(no_delay)
    return _DELAY_CALLBACK[0]
