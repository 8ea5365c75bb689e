"""The system's password libraries through ctypes: libcrypt's ``crypt_rn`` and
libsodium's ARGON2 (the libraries Dovecot itself uses).

ctypes releases the GIL during the call, so these verifications run in
parallel on threads too (``benchmarks/gil.py``). Either library may be
missing: :func:`crypt_available` and :func:`argon2_backend` say which code
:mod:`saslnetauth.credentials.passwords` falls back to (passlib).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import errno
import hmac
import re
import threading
from typing import Any

from saslnetauth.errors import VerifyResourceError

__all__ = ["LibCrypt", "LibSodium", "argon2_backend", "crypt_available", "libcrypt", "libsodium"]


# --- libcrypt ------------------------------------------------------------------

_CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt


#: The sonames Debian 12 and 13 ship, tried before ``ctypes.util.find_library``, which
#: runs ``ldconfig -p`` (about 10 ms a library, paid by every ``saslnetauth check``
#: and every checkpassword fallback).
_SONAMES = {"crypt": "libcrypt.so.1", "sodium": "libsodium.so.23"}


def _system_library(name: str, *, use_errno: bool = False) -> ctypes.CDLL | None:
    """The system's shared library ``name`` (as for ``-lname``), or None."""
    if name in _SONAMES:
        try:
            return ctypes.CDLL(_SONAMES[name], use_errno=use_errno)
        except OSError:
            pass  # not this soname here: ask the linker's cache
    path = ctypes.util.find_library(name)
    if not path:
        return None
    try:
        return ctypes.CDLL(path, use_errno=use_errno)
    except OSError:
        return None


class LibCrypt:
    def __init__(self) -> None:
        self.fn: Any = None
        lib = _system_library("crypt")
        fn = getattr(lib, "crypt_rn", None)
        if fn is None:
            return
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self.fn = fn
        self._local = threading.local()

    def crypt(self, password: bytes, setting: bytes) -> bytes | None:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
        out = self.fn(password, setting, buf, _CRYPT_DATA_SIZE)
        if not out or out.startswith(b"*"):
            return None
        return bytes(out)


libcrypt = LibCrypt()


def crypt_available() -> bool:
    """True when the system libcrypt (crypt_rn) is used for crypt hashes."""
    return libcrypt.fn is not None


# --- libsodium (ARGON2, as Dovecot does) -----------------------------------------

_SODIUM_PARAMS = re.compile(r"^\$argon2i?d?\$v=19\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,3})\$")
_SODIUM_FULL = re.compile(
    r"^\$argon2(id|i)\$v=19\$m=(\d{1,10}),t=(\d{1,10}),p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{22,})$"
)
_ALG = {"id": 2, "i": 1}  # crypto_pwhash_ALG_ARGON2ID13, crypto_pwhash_ALG_ARGON2I13


def _b64_unpadded(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class LibSodium:
    """ARGON2I/ARGON2ID from the system libsodium (the library Dovecot uses): about
    twice as fast as argon2-cffi's bundled code.

    ``crypto_pwhash_str_verify`` returns -1 both for a wrong password and when
    its memory cannot be allocated (libsodium 1.0.18 sets EINVAL either way), so
    the usual hash (one lane, 16-byte salt, as ``doveadm pw`` and passlib make
    it) is computed with ``crypto_pwhash``, which cannot "mismatch": any -1 from
    it is an error (ENOMEM: :class:`VerifyResourceError`), and the digests are
    compared here. Other shapes go to ``crypto_pwhash_str_verify``."""

    def __init__(self) -> None:
        self.fn: Any = None
        self.raw: Any = None
        lib = _system_library("sodium", use_errno=True)
        init = getattr(lib, "sodium_init", None)
        fn = getattr(lib, "crypto_pwhash_str_verify", None)
        if init is None or fn is None or init() < 0:
            return
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
        fn.restype = ctypes.c_int
        self.fn = fn
        raw = getattr(lib, "crypto_pwhash", None)
        if raw is not None:
            raw.argtypes = [
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_size_t,
                ctypes.c_int,
            ]
            raw.restype = ctypes.c_int
            self.raw = raw

    def handles(self, value: str) -> bool:
        """libsodium takes version 19 strings with p >= 1 and m >= 8 KiB per lane."""
        if self.fn is None:
            return False
        m = _SODIUM_PARAMS.match(value)
        if not m:
            return False
        mem, time_cost, lanes = (int(g) for g in m.groups())
        return lanes >= 1 and time_cost >= 1 and mem >= 8 * lanes

    def verify(self, value: str, secret: bytes) -> bool:
        """True on a match, False on a mismatch; VerifyResourceError when libsodium
        could not compute the hash (no memory)."""
        m = _SODIUM_FULL.match(value) if self.raw is not None else None
        if m is not None:
            kind, mem, time_cost, salt_text, digest_text = m.groups()
            digest = _b64_unpadded(digest_text)
            out = ctypes.create_string_buffer(len(digest))
            ctypes.set_errno(0)
            rc = self.raw(
                out,
                len(digest),
                secret,
                len(secret),
                _b64_unpadded(salt_text),
                int(time_cost),
                int(mem) * 1024,
                _ALG[kind],
            )
            if rc == 0:
                return hmac.compare_digest(out.raw, digest)
            code = ctypes.get_errno()
            if code != errno.EINVAL:  # EINVAL: limits crypto_pwhash refuses (argon2i t < 3)
                raise VerifyResourceError(
                    f"libsodium could not compute the ARGON2 hash: "
                    f"{errno.errorcode.get(code, code)}"
                )
        ctypes.set_errno(0)
        if int(self.fn(value.encode("ascii"), secret, len(secret))) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, 0):  # a mismatch (1.0.18 cannot tell more)
            return False
        raise VerifyResourceError(
            f"libsodium could not verify the ARGON2 hash: {errno.errorcode.get(code, code)}"
        )


libsodium = LibSodium()


def argon2_backend() -> str:
    """Which code verifies ARGON2 hashes: "libsodium" or "argon2-cffi"."""
    return "libsodium" if libsodium.fn is not None else "argon2-cffi"
