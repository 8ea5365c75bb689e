"""Trusted proxies for Dovecot's auth policy requests (docs/webmail.md).

The body carries ``remote`` (the client address, as forwarded) and, with the
shipped snippets, ``real_remote`` (Dovecot's ``%{real_rip}``, the connecting
address). :func:`saslnetauth.policy.proxies.route` says which one is judged. The
policy server never sees a password, and Dovecot's passdb holds the main
passwords only, so its sessions are those of the main password
(:mod:`saslnetauth.policy.binding`, scope 0): a successful forwarded login's
report opens or renews one, a refused forwarded login ends them, and a login from
the proxy without a client address is judged by the session's client address
and refused (``proxy_without_client_address``) without one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from saslnetauth.logfmt import kv
from saslnetauth.policy.binding import Binding, SessionBinder, fingerprint
from saslnetauth.policy.proxies import Case, ProxyNetworks, Route
from saslnetauth.policy.verdict import Decision, Reason, Verdict

if TYPE_CHECKING:
    from saslnetauth.policy.model import UserRecord
    from saslnetauth.serve.http.policyrequest import PolicyRequest

__all__ = ["PolicyProxies", "Routed"]

log = logging.getLogger("saslnetauth.auth")

_NETWORK = (Reason.NETWORK, Reason.NO_NETWORK_RULES)


@dataclass(frozen=True, slots=True)
class Routed:
    """A policy request as its route makes it: ``req.remote`` is the address judged
    (None: none may be, refuse), with the session it is judged by."""

    route: Route
    req: PolicyRequest | None
    binding: Binding | None = None


class PolicyProxies:
    """The proxy half of the policy endpoint; its lookups run on the lookup thread."""

    def __init__(self, proxies: ProxyNetworks, binder: SessionBinder | None) -> None:
        self.proxies = proxies
        self.binder = binder

    def route(self, req: PolicyRequest, user: UserRecord | None) -> Routed:
        """On the lookup thread: which address is judged (BackendError propagates)."""
        route = self.proxies.route(req.remote, req.real_remote or None, req.protocol)
        if route.case is not Case.PROXY_ONLY:
            return Routed(route, replace(req, remote=route.rip or ""))
        binding = None if self.binder is None else self.binder.lookup(route, user, None)
        if binding is None:
            return Routed(route, None)
        return Routed(route, replace(req, remote=binding.rip), binding)

    def settle(
        self, routed: Routed, user: UserRecord | None, allowed: bool, reason: Reason
    ) -> tuple[bool, Reason]:
        """The verdict of ``allow`` as the route makes it; ends sessions it refuses."""
        route = routed.route
        if route.proxy is None:
            return allowed, reason
        if route.case is Case.FORWARDED:
            if not allowed:
                self._end(user, route.proxy)
            return allowed, reason
        binding = routed.binding
        if binding is None or user is None:
            return False, Reason.PROXY_WITHOUT_CLIENT_ADDRESS
        if allowed and fingerprint(user, None) == binding.fingerprint:
            return True, reason
        if allowed or reason in _NETWORK or reason is Reason.DISABLED:
            self._end(user, route.proxy)
            return False, Reason.PROXY_WITHOUT_CLIENT_ADDRESS
        return False, reason

    def report(self, req: PolicyRequest, decision: Decision, user: UserRecord | None) -> None:
        """On the lookup thread: a forwarded login's outcome opens, renews or ends the
        user's session through the proxy."""
        binder = self.binder
        route = self.proxies.route(req.remote, req.real_remote or None, req.protocol)
        if binder is None or route.case is not Case.FORWARDED or user is None:
            return
        if decision.verdict is Verdict.TEMPFAIL:
            return
        binder.settle(decision, route, user, None, None)

    def _end(self, user: UserRecord | None, proxy: str) -> None:
        if self.binder is None or user is None:
            return
        try:
            self.binder.store.end(user.id, proxy)
        except Exception as exc:
            log.error("%s", kv("webmail session not ended", user=user.name, error=str(exc)))
