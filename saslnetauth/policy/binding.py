"""Webmail session binding (docs/webmail.md): a trusted proxy that forwarded no
client address (a webmail's SMTP AUTH from localhost) admits a login only inside
a session that an allowed forwarded login of the same user and credential opened
through the same proxy. Pure; the rows live in the database
(:mod:`saslnetauth.store.webmail`), shared by every process of the server.

- An allowed forwarded login (:attr:`Case.FORWARDED`) opens or renews the
  session of (user, credential, proxy) for ``[proxies] session_seconds``, with
  the client address it came from and a fingerprint of the credential's stored
  hash.
- A login through that proxy without a client address is judged *as if it came
  from that client address* (so a network revoked since, a service its rules do
  not cover, a disabled user, an expired app password refuse it as they would
  the client), and only with the same credential: the app password the session
  was opened with (a deleted one is gone: its sessions are deleted with it), or
  the main password with the same stored hash (a password change ends it).
- A refused forwarded login of the user through the proxy ends the user's
  sessions through it at once; so does a refused session login whose password
  was right (disabled, revoked network, changed password).

What it does not protect: someone who already holds a live webmail session
(the webmail's own cookie) sends as that user until the session ends.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from saslnetauth.logfmt import kv
from saslnetauth.policy.model import AppPasswordRecord, UserRecord
from saslnetauth.policy.proxies import Case, Route
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = [
    "Binding",
    "Bindings",
    "ReadOnlyBindings",
    "SessionBinder",
    "fingerprint",
    "scope_of",
    "settle_unbound",
]

log = logging.getLogger("saslnetauth.auth")

#: The network failures a session login turns into ``proxy_without_client_address``.
_NETWORK = (Reason.NETWORK, Reason.NO_NETWORK_RULES)
#: Hex digits of the credential fingerprint (64 bits of SHA-256 of the stored hash).
FINGERPRINT_HEX = 16


@dataclass(frozen=True, slots=True)
class Binding:
    """One live session: whose, which credential (``scope``: the app password's id,
    0 the main password), through which proxy, from which client address."""

    user_id: int
    scope: int
    proxy: str
    rip: str
    fingerprint: str
    expires: float


class Bindings(Protocol):
    """Where sessions are kept (the database, for every process of the server)."""

    def find(self, user_id: int, scope: int, proxy: str, now: float) -> Binding | None: ...

    def renew(self, binding: Binding) -> None: ...

    def end(self, user_id: int, proxy: str) -> int: ...


class ReadOnlyBindings:
    """Sessions seen, never changed (``saslnetauth check``)."""

    def __init__(self, inner: Bindings) -> None:
        self.inner = inner

    def find(self, user_id: int, scope: int, proxy: str, now: float) -> Binding | None:
        return self.inner.find(user_id, scope, proxy, now)

    def renew(self, binding: Binding) -> None:
        return None

    def end(self, user_id: int, proxy: str) -> int:
        return 0


def scope_of(app: AppPasswordRecord | None) -> int:
    return 0 if app is None else app.id


def fingerprint(user: UserRecord, app: AppPasswordRecord | None) -> str:
    """A short digest of the credential's stored hash: a changed password (or a PAM
    user's row replaced) no longer matches. Never the password itself."""
    stored = app.secret_hash if app is not None else (user.password_hash or f"pam:{user.name}")
    return hashlib.sha256(stored.encode("utf-8", "surrogateescape")).hexdigest()[:FINGERPRINT_HEX]


def _refused(d: Decision, detail: str | None = None) -> Decision:
    return replace(
        d,
        verdict=Verdict.FAIL,
        reason=Reason.PROXY_WITHOUT_CLIENT_ADDRESS,
        matched=None,
        expires=None,
        new_location=None,
        detail=detail,
    )


def settle_unbound(d: Decision, route: Route) -> Decision:
    """``d`` for a server that keeps no sessions: a proxy without a client address
    admits nothing (a network failure there is ``proxy_without_client_address``)."""
    if route.proxy is None:
        return d
    d = replace(d, proxy=route.proxy)
    if route.case is Case.PROXY_ONLY and (d.ok or d.reason in _NETWORK):
        return _refused(d)
    return d


class SessionBinder:
    """The engine's side of the binding: look a session up, settle a decision."""

    def __init__(self, store: Bindings, seconds: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.seconds = seconds
        self.clock = clock

    def lookup(
        self, route: Route, user: UserRecord | None, app: AppPasswordRecord | None
    ) -> Binding | None:
        """The live session a login without a client address may use (BackendError
        propagates: TEMPFAIL)."""
        if route.case is not Case.PROXY_ONLY or route.proxy is None or user is None:
            return None
        return self.store.find(user.id, scope_of(app), route.proxy, self.clock())

    def settle(
        self,
        d: Decision,
        route: Route,
        user: UserRecord | None,
        app: AppPasswordRecord | None,
        binding: Binding | None,
    ) -> Decision:
        """``d`` as the proxy case makes it, with its proxy; opens, renews or ends
        sessions as the module says."""
        if route.proxy is None:
            return d
        d = replace(d, proxy=route.proxy)
        if route.case is Case.FORWARDED:
            self._forwarded(d, route, user, app)
            return d
        if binding is None or user is None:
            return settle_unbound(d, route)
        if d.ok:
            if fingerprint(user, app) == binding.fingerprint:
                return replace(d, matched=f"webmail session from {binding.rip}: {d.matched}")
            self._end(user, route.proxy)
            return _refused(d, "credential changed since the session began")
        if d.verdict is Verdict.FAIL and d.credentials_valid:
            self._end(user, route.proxy)
            if d.reason in _NETWORK:
                return _refused(d, f"session address {binding.rip} no longer allowed")
        return d

    def _forwarded(
        self, d: Decision, route: Route, user: UserRecord | None, app: AppPasswordRecord | None
    ) -> None:
        if user is None or user.id == 0 or route.proxy is None or route.rip is None:
            return  # unknown users, and PAM users not listed, have no session
        if d.ok:
            until = self.clock() + self.seconds
            b = Binding(
                user.id, scope_of(app), route.proxy, route.rip, fingerprint(user, app), until
            )
            try:
                self.store.renew(b)
            except Exception as exc:  # the login stands; the session is not opened
                log.error("%s", kv("webmail session not stored", user=user.name, error=str(exc)))
        elif d.verdict is Verdict.FAIL:
            self._end(user, route.proxy)

    def _end(self, user: UserRecord, proxy: str) -> None:
        try:
            ended = self.store.end(user.id, proxy)
        except Exception as exc:
            log.error("%s", kv("webmail session not ended", user=user.name, error=str(exc)))
            return
        if ended:
            log.info("%s", kv("webmail session ended", user=user.name, proxy=proxy))
