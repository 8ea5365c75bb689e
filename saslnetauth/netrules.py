"""Network rules: parsing and matching client addresses. Pure, standard library only.

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
  looked up for the address (:mod:`saslnetauth.geoip`), and nothing when it
  is unknown (no database, or an address the database does not know: fail
  closed) or when the login has no address.

:class:`RuleSet` indexes rules by prefix length, so a lookup costs at most
one dictionary probe per distinct prefix length (<= 33 for IPv4, <= 129
for IPv6) whatever the number of rules, plus one probe per term kind.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from saslnetauth.errors import InvalidNetworkError, InvalidServiceError

__all__ = [
    "ANY",
    "ASN_PREFIX",
    "COUNTRY_PREFIX",
    "LOCAL",
    "Address",
    "Geo",
    "Network",
    "NetworkRule",
    "RuleSet",
    "client_key",
    "describe_services",
    "format_services",
    "is_geo_term",
    "parse_address",
    "parse_network",
    "parse_services",
]

LOCAL = "local"
ANY = "any"

#: Longest network text we accept (an IPv6 address with zone and prefix fits).
MAX_NETWORK_TEXT = 128

_V4_MAPPED_PREFIX = 0xFFFF << 32
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

COUNTRY_PREFIX = "country:"
ASN_PREFIX = "asn:"
#: Largest autonomous system number (32 bits, RFC 6793); 0 is reserved (RFC 7607).
MAX_ASN = 2**32 - 1
#: The ISO 3166-1 alpha-2 codes officially assigned, and XK (Kosovo, user-assigned,
#: which MaxMind and DB-IP use): the codes the GeoIP databases answer with.
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM
    BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX
    CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG
    GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR
    IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV
    LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE
    NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF
    WS XK YE YT ZA ZM ZW
"""
COUNTRY_CODES = frozenset(_ISO_3166_ALPHA2.split())
#: Codes people write that ISO 3166-1 reserves for something else.
_COUNTRY_MEANT = {"UK": "GB", "EL": "GR"}


# NamedTuples rather than frozen dataclasses: 100,000 global networks are built
# on every reload, and tuples are several times cheaper to construct.


class Address(NamedTuple):
    """A client address reduced to (IP version, integer value)."""

    version: int  # 4 or 6
    value: int

    def __str__(self) -> str:
        return _int_to_text(self.version, self.value)


class Network(NamedTuple):
    """One CIDR block: IP version, prefix length and network address."""

    version: int
    prefixlen: int
    value: int

    def __str__(self) -> str:
        return f"{_int_to_text(self.version, self.value)}/{self.prefixlen}"

    def contains(self, addr: Address) -> bool:
        if addr.version != self.version:
            return False
        bits = 32 if self.version == 4 else 128
        shift = bits - self.prefixlen
        return (addr.value >> shift) == (self.value >> shift)


class Geo(NamedTuple):
    """Where an address is, as the GeoIP databases say; ``None``: not known."""

    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    asn: int | None = None


#: What the caller of a match gives to learn where an address is (looked up only
#: when a country or ASN term applies).
Locate = Callable[[Address], Geo]


class NetworkRule(NamedTuple):
    """A parsed network rule as stored for a user or globally.

    ``spec`` is the canonical text (``192.0.2.0/24``, ``2001:db8::/32``,
    ``local``, ``any``, ``country:DE``, ``asn:3320``); ``services`` is
    ``None`` for "every service". A term has no ``networks``: ``country`` or
    ``asn`` says what it matches.
    """

    spec: str
    networks: tuple[Network, ...]
    services: frozenset[str] | None = None
    scope: str = "global"  # "user" or "global"
    comment: str | None = None
    local: bool = False
    country: str | None = None
    asn: int | None = None

    def applies_to(self, service: str) -> bool:
        return self.services is None or service in self.services

    def describe(self) -> str:
        return f"{self.scope} network {self.spec} ({describe_services(self.services)})"

    @classmethod
    def parse(
        cls,
        text: str,
        services: Iterable[str] | str | None = None,
        *,
        scope: str = "global",
        comment: str | None = None,
    ) -> NetworkRule:
        spec, networks, local = parse_network(text)
        # positional: 100,000 global networks are parsed on a cold load
        if networks or local or not spec.startswith((COUNTRY_PREFIX, ASN_PREFIX)):
            return cls(spec, networks, parse_services(services), scope, comment, local)
        country, asn = (spec[8:], None) if spec[0] == "c" else (None, int(spec[4:]))
        return cls(spec, (), parse_services(services), scope, comment, False, country, asn)


def _int_to_text(version: int, value: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def _parse_ip(text: str) -> Address | None:
    """Parse an IP address; ``None`` if it does not parse. Zone ids are dropped."""
    if "%" in text:
        text = text.split("%", 1)[0]
    if ":" in text:
        try:
            raw = socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            return None
        value = int.from_bytes(raw, "big")
        if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, matched as IPv4
            return Address(4, value & 0xFFFFFFFF)
        return Address(6, value)
    try:
        raw = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None
    return Address(4, int.from_bytes(raw, "big"))


def parse_address(text: str | None) -> Address | None:
    """Parse a client address (``rip``) as the policy contract says.

    Returns ``None`` for an absent, empty or unparsable address (which then
    matches only ``local``). Never raises.
    """
    if not text or len(text) > MAX_NETWORK_TEXT:
        return None
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _parse_ip(text)


def client_key(rip: str | None, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str | None:
    """The network of ``prefix`` bits around a client address, as text
    (``192.0.2.0/24``); ``None`` for an absent or unparsable address.

    Used to group clients: the penalty box's buckets, the report's networks.
    """
    addr = parse_address(rip)
    if addr is None:
        return None
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    shift = (32 if addr.version == 4 else 128) - prefix
    return f"{_int_to_text(addr.version, (addr.value >> shift) << shift)}/{prefix}"


def parse_network(text: str) -> tuple[str, tuple[Network, ...], bool]:
    """Parse one network rule text.

    Returns ``(canonical spec, networks, is_local)``. Raises
    :class:`InvalidNetworkError` with a message fit for an admin.
    """
    if not isinstance(text, str):
        raise InvalidNetworkError(f"network must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise InvalidNetworkError("empty network")
    if len(raw) > MAX_NETWORK_TEXT:
        raise InvalidNetworkError(f"network too long ({len(raw)} characters)")
    low = raw.lower()
    if low == LOCAL:
        return LOCAL, (), True
    if low == ANY:
        return ANY, (Network(4, 0, 0), Network(6, 0, 0)), False
    if is_geo_term(low):
        return _parse_term(raw, low), (), False
    addr_text, slash, plen_text = raw.partition("/")
    addr = _parse_ip(addr_text)
    if addr is None:
        raise InvalidNetworkError(
            f"invalid network {raw!r}: expected an IP address, a CIDR such as "
            "192.0.2.0/24 or 2001:db8::/32, 'local', 'any', country:DE or asn:3320"
        )
    mapped = ":" in addr_text and addr.version == 4
    full = 32 if addr.version == 4 else 128
    if slash:
        # ASCII digits only: str.isdigit() also admits U+00B2 (int() refuses it) and
        # U+0668 or U+FF18 (int() reads them as 8); none of them is a network text
        if not (plen_text.isascii() and plen_text.isdigit()) or len(plen_text) > 3:
            raise InvalidNetworkError(f"invalid prefix length in {raw!r}")
        prefixlen = int(plen_text)
        if mapped:  # ::ffff:192.0.2.0/120 is 192.0.2.0/24
            if prefixlen < 96 or prefixlen > 128:
                raise InvalidNetworkError(
                    f"invalid network {raw!r}: an IPv4-mapped network needs a prefix of 96..128"
                )
            prefixlen -= 96
        if prefixlen > full:
            raise InvalidNetworkError(
                f"invalid prefix length /{plen_text} in {raw!r} (at most /{full})"
            )
    else:
        prefixlen = full
    host_mask = (1 << (full - prefixlen)) - 1
    if addr.value & host_mask:
        meant = Network(addr.version, prefixlen, addr.value & ~host_mask)
        raise InvalidNetworkError(
            f"invalid network {raw!r}: host bits are set; did you mean {meant}?"
        )
    net = Network(addr.version, prefixlen, addr.value)
    if mapped or addr.version == 6:
        text_addr = _int_to_text(addr.version, addr.value)
    else:
        # inet_pton accepted exactly four decimal parts without leading zeros:
        # the text is already canonical (saves inet_ntop on a 100,000-row load)
        text_addr = addr_text.partition("%")[0]
    spec = text_addr if prefixlen == full else f"{text_addr}/{prefixlen}"
    return spec, (net,), False


def is_geo_term(text: str) -> bool:
    """Whether ``text`` is meant as a country or ASN term (no address starts with
    ``co`` or ``as``: neither pair is hexadecimal)."""
    return text[:2].lower() in ("co", "as")


def _parse_term(raw: str, low: str) -> str:
    """The canonical text of a ``country:`` or ``asn:`` term (InvalidNetworkError)."""
    if low.startswith("co"):
        code = raw[len(COUNTRY_PREFIX) :].strip().upper()
        if not low.startswith(COUNTRY_PREFIX) or not code:
            raise InvalidNetworkError(
                f"invalid term {raw!r}: write a country as country:DE (an ISO 3166-1 alpha-2 code)"
            )
        if code in COUNTRY_CODES:
            return COUNTRY_PREFIX + code
        meant = _COUNTRY_MEANT.get(code)
        hint = f"; did you mean country:{meant}?" if meant else ""
        raise InvalidNetworkError(
            f"invalid country {raw!r}: not an ISO 3166-1 alpha-2 country code "
            f"(two letters such as DE, FR, GB){hint}"
        )
    digits = (low[3:].removeprefix(":") if low.startswith("asn") else low[2:]).strip()
    if digits.startswith("as"):  # asn:AS3320
        digits = digits[2:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        dot = re.fullmatch(r"(\d{1,5})\.(\d{1,5})", digits)
        if dot and int(dot[1]) < 65536 and int(dot[2]) < 65536:
            value = (int(dot[1]) << 16) + int(dot[2])
            raise InvalidNetworkError(
                f"invalid ASN {raw!r}: write the number as asn:{value} (asdot notation "
                "is not accepted)"
            )
        raise InvalidNetworkError(
            f"invalid ASN {raw!r}: write an autonomous system as asn:3320 or AS3320"
        )
    asn = int(digits)
    if not 0 < asn <= MAX_ASN:
        raise InvalidNetworkError(
            f"invalid ASN {raw!r}: an autonomous system number is 1 to {MAX_ASN}"
        )
    return f"{ASN_PREFIX}{asn}"


def parse_services(value: Iterable[str] | str | None) -> frozenset[str] | None:
    """Parse a service list (comma/space separated text or an iterable).

    ``None``, empty text or an empty iterable mean "every service" and give
    ``None``. Names are lower-cased; each must be a plain word.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _parse_services_text(value)
    return _parse_services(value)


@functools.lru_cache(maxsize=1024)
def _parse_services_text(value: str) -> frozenset[str] | None:
    """Service lists given as text, remembered: the same few repeat over 100,000
    global networks (invalid ones raise every time, they are not remembered)."""
    return _parse_services(value)


def _parse_services(value: Iterable[str] | str) -> frozenset[str] | None:
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value)
    names: set[str] = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if not _SERVICE_RE.match(name):
            raise InvalidServiceError(
                f"invalid service name {item!r}: use a word such as smtp, imap, pop3, submission"
            )
        names.add(name)
    return frozenset(names) if names else None


def describe_services(services: Iterable[str] | None, everything: str = "all services") -> str:
    """Services for people: sorted and comma separated, or ``everything`` when none."""
    return ",".join(sorted(services)) if services else everything


def format_services(services: frozenset[str] | None) -> str | None:
    """Inverse of :func:`parse_services` for storage: sorted, comma separated."""
    if not services:
        return None
    return ",".join(sorted(services))


class RuleSet:
    """An indexed, immutable collection of :class:`NetworkRule`.

    Lookups are O(number of distinct prefix lengths), independent of the
    number of rules; country and ASN terms are one dictionary probe each.
    """

    __slots__ = (
        "_asns",
        "_countries",
        "_geo_services",
        "_geo_wildcard",
        "_index",
        "_local",
        "_rules",
        "_services_seen",
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
        for rule in self._rules:
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
) -> tuple[bool, NetworkRule | None]:
    """Match ``addr`` against the union of several rule sets.

    Returns ``(any rule applies to service, matching rule or None)``. Country and
    ASN terms are tried last, and ``locate(addr)`` is called (once) only when no
    network admitted the address and such a term applies; without ``locate`` they
    match nothing.
    """
    applicable = False
    wanting: list[RuleSet] = []
    for rules in sets:
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
