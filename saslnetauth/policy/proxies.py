"""Trusted proxies: which address a login is judged by (docs/webmail.md). Pure,
standard library only.

A webmail, an IMAP/SMTP proxy or Postfix's XCLIENT reaches saslnetauth from
its own address and may forward its client's. ``[proxies] networks`` lists the
addresses that are proxies, never clients: an address in them is never matched
against a user's, a global, an app password's or a country/ASN rule. Given the
connecting address (Dovecot's ``real_rip``; absent when nothing was forwarded,
then ``rip`` is the connecting address) and ``rip``, :func:`route` says which
:class:`Case` applies:

``direct``
    nothing forwarded, the address is not a proxy: judged as always;
``forwarded``
    a trusted proxy forwarded a client address: that address is judged, and
    the proxy is logged beside it (``rip=203.0.113.9 proxy=127.0.0.1``);
``untrusted_forward``
    something forwarded an address, but the connecting address is not a
    trusted proxy: judged by the connecting address (Dovecot forwards only from
    its ``login_trusted_networks``; saslnetauth never widens that);
``proxy_without_client_address``
    the address (connecting, or forwarded) is a proxy's: no client address is
    known, so no network can admit it; only a webmail session binding can
    (:mod:`saslnetauth.policy.binding`).

An entry of ``[proxies] networks`` is a network, optionally followed by the
services it is a proxy for (``"192.0.2.10/32 services=smtp,submission"``);
without services it is one for every service.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from saslnetauth.errors import ConfigError, InvalidNetworkError, InvalidServiceError
from saslnetauth.policy.rules.addresses import Address, parse_address
from saslnetauth.policy.rules.netrules import parse_services
from saslnetauth.policy.rules.networks import Network, parse_network

if TYPE_CHECKING:
    from saslnetauth.policy.login import Login

__all__ = ["Case", "ProxyNetworks", "Route", "route"]

_SERVICES = "services="


class Case(enum.Enum):
    """Which address of a login is judged (the module's list)."""

    DIRECT = "direct"
    FORWARDED = "forwarded"
    UNTRUSTED_FORWARD = "untrusted_forward"
    PROXY_ONLY = "proxy_without_client_address"


@dataclass(frozen=True, slots=True)
class Route:
    """The outcome of :func:`route`: the case, the address judged (None for
    ``proxy_without_client_address``: none is known), the trusted proxy the login
    came through (None unless ``forwarded`` or ``proxy_without_client_address``)."""

    case: Case
    rip: str | None
    proxy: str | None = None

    def explain(self) -> str:
        """One line for ``saslnetauth check``."""
        if self.case is Case.FORWARDED:
            return f"forwarded by trusted proxy {self.proxy}: judged by {self.rip}"
        if self.case is Case.UNTRUSTED_FORWARD:
            return f"forwarded by {self.rip}, not a trusted proxy: judged by {self.rip}"
        if self.case is Case.PROXY_ONLY:
            return (
                f"trusted proxy {self.proxy} forwarded no client address: only a webmail "
                "session of this user and credential admits it"
            )
        return "direct: judged by the connecting address"


@dataclass(frozen=True, slots=True)
class ProxyNetwork:
    """One entry of ``[proxies] networks``."""

    network: Network
    services: frozenset[str] | None  # None: every service

    def __str__(self) -> str:
        if self.services is None:
            return str(self.network)
        return f"{self.network} {_SERVICES}{','.join(sorted(self.services))}"


@dataclass(frozen=True, slots=True)
class ProxyNetworks:
    """The configured proxies (empty: no address is a proxy)."""

    entries: tuple[ProxyNetwork, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str], where: str = "proxies.networks") -> ProxyNetworks:
        """Parse the configured entries; ConfigError names the bad one."""
        out: list[ProxyNetwork] = []
        for text in texts:
            out.extend(_parse_entry(text, where))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def contains(self, addr: Address | None, service: str) -> bool:
        """``addr`` is a trusted proxy's for ``service`` (an absent one never is)."""
        if addr is None:
            return False
        return any(
            e.network.contains(addr) and (e.services is None or service in e.services)
            for e in self.entries
        )

    def overlapping(self, networks: Iterable[Network]) -> list[str]:
        """The entries that share an address with any of ``networks`` (for the warning
        of ``net add`` / ``user net add``)."""
        hits: list[str] = []
        for net in networks:
            for e in self.entries:
                if _overlap(net, e.network) and str(e) not in hits:
                    hits.append(str(e))
        return hits

    def route(self, rip: str | None, real_rip: str | None, service: str) -> Route:
        return route(self, rip, real_rip, service)

    def judged(self, login: Login) -> tuple[Route, Login]:
        """The route of ``login`` and the login as judged: ``login`` itself when it is
        direct, else one with the judged address (parsed here, the one time a proxied
        login's address is read again) and no ``real_rip``; for
        ``proxy_without_client_address`` one without an address that keeps the
        proxy's as ``real_rip``."""
        r = self.route(login.rip, login.real_rip, login.service)
        if r.case is Case.DIRECT and login.real_rip is None:
            return r, login
        if r.case is Case.PROXY_ONLY:
            return r, replace(login, address=None, rip=None, real_rip=r.proxy)
        if r.rip == login.rip:
            return r, replace(login, real_rip=None)
        return r, replace(login, address=parse_address(r.rip), rip=r.rip, real_rip=None)


def route(proxies: ProxyNetworks, rip: str | None, real_rip: str | None, service: str) -> Route:
    """Which address a login is judged by (the module's cases). ``real_rip`` is the
    connecting address when the frontend reports one (equal to ``rip`` or absent when
    nothing was forwarded); ``rip`` is the client address as forwarded."""
    forwarded = parse_address(rip)
    connecting = parse_address(real_rip) if real_rip else forwarded
    if real_rip and connecting is None:
        # a connecting address that does not parse is no trusted proxy: judged by it,
        # as absent (which matches only "local"), never by what it forwarded
        return Route(Case.UNTRUSTED_FORWARD, real_rip)
    was_forwarded = bool(real_rip) and forwarded != connecting
    if connecting is not None and proxies.contains(connecting, service):
        proxy = str(connecting)
        if was_forwarded and forwarded is not None and not proxies.contains(forwarded, service):
            return Route(Case.FORWARDED, str(forwarded), proxy)
        return Route(Case.PROXY_ONLY, None, proxy)
    if was_forwarded:
        return Route(Case.UNTRUSTED_FORWARD, real_rip)
    return Route(Case.DIRECT, rip)


def _parse_entry(text: str, where: str) -> list[ProxyNetwork]:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: {text!r}: a network such as 127.0.0.1/32")
    net_text, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    services: frozenset[str] | None = None
    if rest:
        if not rest.startswith(_SERVICES):
            raise ConfigError(
                f"{where}: {text!r}: after the network only services=smtp,submission may follow"
            )
        try:
            services = parse_services(rest[len(_SERVICES) :])
        except InvalidServiceError as exc:
            raise ConfigError(f"{where}: {text!r}: {exc}") from None
    try:
        spec, networks, local = parse_network(net_text)
    except InvalidNetworkError as exc:
        raise ConfigError(f"{where}: {text!r}: {exc}") from None
    if local or not networks:
        raise ConfigError(f"{where}: {text!r}: {spec} is not an address or network")
    return [ProxyNetwork(n, services) for n in networks]


def _overlap(a: Network, b: Network) -> bool:
    if a.version != b.version:
        return False
    bits = 32 if a.version == 4 else 128
    shift = bits - min(a.prefixlen, b.prefixlen)
    return (a.value >> shift) == (b.value >> shift)
