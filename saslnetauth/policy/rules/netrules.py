"""Network rules: built from their texts (:mod:`saslnetauth.policy.rules.networks`)
and matched against client addresses. Pure, standard library only.

Semantics follow Dovecot's ``allow_nets`` (doc: passdb extra field
``allow_nets``) and the project's policy contract:

* a rule is an IPv4 or IPv6 address or CIDR network, or one of the
  keywords ``local`` (matches a login with no client address) and ``any``
  (0.0.0.0/0 and ::/0);
* a CIDR with host bits set is refused, naming the network it probably
  meant;
* an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is matched as IPv4,
  an IPv6 zone (``%eth0``) is ignored, and an address that does not parse
  is treated as absent, so it only matches ``local``;
* each rule may be limited to a set of services; a rule without services
  applies to every service;
* ``country:DE`` (an ISO 3166-1 alpha-2 code) and ``asn:3320`` (also
  ``AS3320``) are terms, not networks: they match the :class:`Geo` the caller
  looked up for the address (:mod:`saslnetauth.policy.rules.geoip`), and nothing when it
  is unknown (no database, or an address the database does not know: fail
  closed) or when the login has no address.
* a rule may expire (:mod:`saslnetauth.policy.rules.expiry`): from its ``expires`` on
  (UNIX time) it no longer matches. :meth:`RuleSet.at` gives the rules that
  still hold at a given time, and :func:`merged_match` takes that time, so
  no caller can match an expired rule by forgetting the clock.

:class:`RuleSet` indexes rules by prefix length, so a lookup costs at most
one dictionary probe per distinct prefix length (<= 33 for IPv4, <= 129
for IPv6) whatever the number of rules, plus one probe per term kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from saslnetauth.policy.rules.addresses import Address, client_key, parse_address
from saslnetauth.policy.rules.expiry import format_utc
from saslnetauth.policy.rules.netterms import (
    ASN_PREFIX,
    COUNTRY_PREFIX,
    Geo,
    is_geo_term,
)
from saslnetauth.policy.rules.networks import Network, parse_network
from saslnetauth.policy.rules.services import describe_services, format_services, parse_services

__all__ = [
    "ASN_PREFIX",
    "COUNTRY_PREFIX",
    "Address",
    "Geo",
    "NetworkRule",
    "RuleSet",
    "client_key",
    "describe_services",
    "format_services",
    "is_geo_term",
    "parse_address",
    "parse_services",
]

# NamedTuples rather than frozen dataclasses: 100,000 global networks are built
# on every reload, and tuples are several times cheaper to construct.


#: What the caller of a match gives to learn where an address is (looked up only
#: when a country or ASN term applies).
Locate = Callable[[Address], Geo]


class NetworkRule(NamedTuple):
    """A parsed network rule as stored for a user or globally.

    ``spec`` is the canonical text (``192.0.2.0/24``, ``2001:db8::/32``,
    ``local``, ``any``, ``country:DE``, ``asn:3320``); ``services`` is
    ``None`` for "every service". A term has no ``networks``: ``country`` or
    ``asn`` says what it matches. ``expires`` is ``None`` for a permanent
    rule, else the UNIX time from which it no longer matches.
    """

    spec: str
    networks: tuple[Network, ...]
    services: frozenset[str] | None = None
    scope: str = "global"  # "user" or "global"
    comment: str | None = None
    local: bool = False
    country: str | None = None
    asn: int | None = None
    expires: float | None = None

    def applies_to(self, service: str) -> bool:
        return self.services is None or service in self.services

    def live(self, now: float) -> bool:
        """True while the rule holds: permanent, or ``now`` before its expiry."""
        return self.expires is None or now < self.expires

    def describe(self) -> str:
        services = describe_services(self.services)
        if self.expires is not None:
            services += f", until {format_utc(self.expires)}"
        return f"{self.scope} network {self.spec} ({services})"

    @classmethod
    def parse(
        cls,
        text: str,
        services: Iterable[str] | str | None = None,
        *,
        scope: str = "global",
        comment: str | None = None,
        expires: float | None = None,
    ) -> NetworkRule:
        spec, networks, local = parse_network(text)
        # positional: 100,000 global networks are parsed on a cold load
        if networks or local or not spec.startswith((COUNTRY_PREFIX, ASN_PREFIX)):
            return cls(
                spec, networks, parse_services(services), scope, comment, local, None, None, expires
            )
        country, asn = (spec[8:], None) if spec[0] == "c" else (None, int(spec[4:]))
        return cls(spec, (), parse_services(services), scope, comment, False, country, asn, expires)


class RuleSet:
    """An indexed, immutable collection of :class:`NetworkRule`.

    Lookups are O(number of distinct prefix lengths), independent of the
    number of rules; country and ASN terms are one dictionary probe each.
    :meth:`match` and :meth:`applies_to` look at every rule, expired or not:
    match on :meth:`at` (or through :func:`merged_match`).
    """

    __slots__ = (
        "_asns",
        "_countries",
        "_geo_services",
        "_geo_wildcard",
        "_index",
        "_local",
        "_next_expiry",
        "_rules",
        "_services_seen",
        "_view",
        "_wildcard",
    )

    def __init__(self, rules: Iterable[NetworkRule] = ()) -> None:
        self._rules: tuple[NetworkRule, ...] = tuple(rules)
        # version -> list of (prefixlen, shift, {network >> shift: [rules]}), longest first
        index: dict[int, dict[int, dict[int, list[NetworkRule]]]] = {4: {}, 6: {}}
        self._local: list[NetworkRule] = []
        self._countries: dict[str, list[NetworkRule]] = {}
        self._asns: dict[int, list[NetworkRule]] = {}
        self._wildcard = False  # some rule applies to every service
        self._services_seen: set[str] = set()
        self._geo_wildcard = False  # some term applies to every service
        self._geo_services: set[str] = set()
        #: The earliest expiry of any rule (inf: none expires); before it, at() is self.
        self._next_expiry = math.inf
        #: The last view of at(): (latest expiry it left out, the rules without them).
        self._view: tuple[float, RuleSet] | None = None
        for rule in self._rules:
            if rule.expires is not None and rule.expires < self._next_expiry:
                self._next_expiry = rule.expires
            if rule.services is None:
                self._wildcard = True
            else:
                self._services_seen.update(rule.services)
            if rule.local:
                self._local.append(rule)
            if rule.country is not None or rule.asn is not None:
                self._add_term(rule)
                continue
            for version, plen, value in rule.networks:
                tables = index[version]
                table = tables.get(plen)
                if table is None:
                    table = tables[plen] = {}
                key = value >> ((32 if version == 4 else 128) - plen)
                bucket = table.get(key)
                if bucket is None:
                    table[key] = [rule]
                else:
                    bucket.append(rule)
        self._index: dict[int, tuple[tuple[int, dict[int, list[NetworkRule]]], ...]] = {}
        for version, by_len in index.items():
            bits = 32 if version == 4 else 128
            self._index[version] = tuple(
                (bits - plen, table) for plen, table in sorted(by_len.items(), reverse=True)
            )

    def _add_term(self, rule: NetworkRule) -> None:
        if rule.country is not None:
            self._countries.setdefault(rule.country, []).append(rule)
        if rule.asn is not None:
            self._asns.setdefault(rule.asn, []).append(rule)
        if rule.services is None:
            self._geo_wildcard = True
        else:
            self._geo_services.update(rule.services)

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[NetworkRule]:
        return iter(self._rules)

    @property
    def rules(self) -> tuple[NetworkRule, ...]:
        return self._rules

    @property
    def next_expiry(self) -> float | None:
        """The earliest expiry among the rules (past or future); None if none expires."""
        return None if self._next_expiry == math.inf else self._next_expiry

    def at(self, now: float) -> RuleSet:
        """The rules that hold at ``now`` (UNIX time): this set itself until its earliest
        expiry, then a set without the expired rules, built once and kept until the
        next expiry among its own rules passes (or the clock goes back before a rule it
        left out). Thread-safe: a view is replaced as a whole."""
        if now < self._next_expiry:
            return self
        view = self._view
        if view is not None and view[0] <= now < view[1]._next_expiry:
            return view[1]
        live = []
        left_out = -math.inf
        for rule in self._rules:
            if rule.live(now):
                live.append(rule)
            else:
                assert rule.expires is not None
                left_out = max(left_out, rule.expires)
        built = RuleSet(live)
        self._view = (left_out, built)
        return built

    def applies_to(self, service: str) -> bool:
        """True when at least one rule applies to ``service``."""
        return self._wildcard or service in self._services_seen

    def wants_geo(self, service: str) -> bool:
        """True when a country or ASN term applies to ``service`` (only then is it
        worth looking the address up)."""
        return self._geo_wildcard or service in self._geo_services

    def match(
        self, addr: Address | None, service: str, geo: Geo | None = None
    ) -> NetworkRule | None:
        """Return a rule that admits ``addr`` for ``service``, or ``None``.

        ``geo`` is where ``addr`` is (:class:`Geo`); without it no country or
        ASN term matches."""
        if addr is None:
            for rule in self._local:
                if rule.applies_to(service):
                    return rule
            return None
        for shift, table in self._index[addr.version]:
            candidates = table.get(addr.value >> shift)
            if candidates:
                for rule in candidates:
                    if rule.applies_to(service):
                        return rule
        if geo is not None:
            return self.match_geo(geo, service)
        return None

    def match_geo(self, geo: Geo, service: str) -> NetworkRule | None:
        """A country or ASN term that admits an address located at ``geo``, or ``None``."""
        for candidates in (
            self._countries.get(geo.country) if geo.country is not None else None,
            self._asns.get(geo.asn) if geo.asn is not None else None,
        ):
            if candidates:
                for rule in candidates:
                    if rule.applies_to(service):
                        return rule
        return None


def merged_match(
    sets: Iterable[RuleSet],
    addr: Address | None,
    service: str,
    locate: Locate | None = None,
    *,
    now: float,
) -> tuple[bool, NetworkRule | None]:
    """Match ``addr`` against the union of several rule sets, as they hold at ``now``
    (UNIX time: expired rules neither match nor apply).

    Returns ``(any rule applies to service, matching rule or None)``. Country and
    ASN terms are tried last, and ``locate(addr)`` is called (once) only when no
    network admitted the address and such a term applies; without ``locate`` they
    match nothing.
    """
    applicable = False
    wanting: list[RuleSet] = []
    for held in sets:
        rules = held.at(now)
        if not rules.applies_to(service):
            continue
        applicable = True
        hit = rules.match(addr, service)
        if hit is not None:
            return True, hit
        if rules.wants_geo(service):
            wanting.append(rules)
    if wanting and addr is not None and locate is not None:
        geo = locate(addr)
        for rules in wanting:
            hit = rules.match_geo(geo, service)
            if hit is not None:
                return True, hit
    return applicable, None
