"""New-location alerts: where a login comes from, and whether that place is new. Pure.

A *place* of an allowed login is up to three facts (docs/alerts.md, "New-location
alerts"): its ``network`` (the IPv4 /24 or IPv6 /48 holding the client
address), its ``country`` and its ``asn`` (from the GeoIP databases, when
configured and when they know the address). Each kind can be switched off
(``[alerts] new_location_*``).

The memory (``user_locations``, :mod:`saslnetauth.store.locations`) holds,
per user, the places seen within ``[alerts] location_memory_days``, each for
one *scope*: the main password (scope 0) or one app password (its id).
:func:`novel` decides, kind by kind, which facts of a login are new:

1. the login is compared with what its own scope has seen of that kind;
2. a scope that has seen nothing of that kind yet (an app password's first
   use, or a database that had no GeoIP before) is compared with what the
   user has seen of it under any scope, so a new phone at home stays quiet;
3. when the user has seen nothing of that kind at all (a new user), the
   fact seeds the memory silently.

So the first login of a new user never alerts, and neither does turning on
the GeoIP databases; a login from a network, country or AS that the user
(or that app password) has not used within the memory does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from saslnetauth.policy.rules.addresses import Address, int_to_text
from saslnetauth.policy.rules.netterms import Geo

__all__ = ["KINDS", "MAIN_SCOPE", "Place", "Seen", "novel", "places_of"]

#: The kinds of fact, in the order they are logged.
KINDS = ("network", "country", "asn")
#: The scope of the main password (an app password's scope is its id).
MAIN_SCOPE = 0
#: Prefix lengths of the ``network`` kind.
IPV4_PREFIX = 24
IPV6_PREFIX = 48


class Place(NamedTuple):
    kind: str
    value: str


class Seen(NamedTuple):
    """One remembered fact: in which scope, of which kind, which value."""

    scope: int
    kind: str
    value: str


def places_of(addr: Address | None, geo: Geo, kinds: Iterable[str]) -> tuple[Place, ...]:
    """The facts of a login from ``addr`` (located at ``geo``), for the enabled
    ``kinds``; a fact that is not known (no address, GeoIP does not know it) is left
    out. An IPv4-mapped IPv6 address arrives as its IPv4 address
    (:func:`saslnetauth.policy.rules.addresses.parse_address`)."""
    wanted = set(kinds)
    out: list[Place] = []
    if addr is not None and "network" in wanted:
        prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
        shift = (32 if addr.version == 4 else 128) - prefix
        net = int_to_text(addr.version, (addr.value >> shift) << shift)
        out.append(Place("network", f"{net}/{prefix}"))
    if geo.country and "country" in wanted:
        out.append(Place("country", geo.country))
    if geo.asn is not None and "asn" in wanted:
        out.append(Place("asn", str(geo.asn)))
    return tuple(out)


def novel(places: Iterable[Place], seen: Iterable[Seen], scope: int) -> tuple[str, ...]:
    """The kinds among ``places`` that are new for ``scope``, given what the user has
    ``seen`` (every scope); rules 1 to 3 of the module, in :data:`KINDS` order."""
    own: dict[str, set[str]] = {}
    anywhere: dict[str, set[str]] = {}
    for s in seen:
        anywhere.setdefault(s.kind, set()).add(s.value)
        if s.scope == scope:
            own.setdefault(s.kind, set()).add(s.value)
    new: list[str] = []
    for place in places:
        known = own.get(place.kind) or anywhere.get(place.kind)
        if known and place.value not in known:
            new.append(place.kind)
    return tuple(k for k in KINDS if k in new)
