"""New-location alerts: the pure rule (saslnetauth.policy.locations), the memory in the
database (saslnetauth.store.locations) behind the real engine, and its purge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.locations import KINDS, Place, Seen, novel, places_of
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.addresses import Address, parse_address
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.rules.netterms import Geo
from saslnetauth.store import SqlStore
from saslnetauth.store.locations import LocationMemory
from saslnetauth.store.purge import purge_locations

PW = "main pass word"


COUNTRIES = {"192.0.2": "DE", "198.51.100": "NL", "203.0.113": "DE"}


def locate(addr: Address) -> Geo:
    prefix = str(addr).rpartition(".")[0]
    return Geo(COUNTRIES.get(prefix), 64500 if prefix == "198.51.100" else None)


# -- the pure rule -----------------------------------------------------------------


def test_places_of_a_login() -> None:
    v4 = places_of(parse_address("::ffff:192.0.2.77"), Geo("DE", 3320), KINDS)
    assert v4 == (Place("network", "192.0.2.0/24"), Place("country", "DE"), Place("asn", "3320"))
    v6 = places_of(parse_address("2001:db8:1:2::5"), Geo(), KINDS)
    assert v6 == (Place("network", "2001:db8:1::/48"),)
    assert places_of(parse_address("192.0.2.1"), Geo("DE"), ("country",)) == (
        Place("country", "DE"),
    )
    assert places_of(None, Geo(), KINDS) == ()


def test_novel() -> None:
    home = (Place("network", "192.0.2.0/24"), Place("country", "DE"))
    trip = (Place("network", "198.51.100.0/24"), Place("country", "NL"))
    seen = [Seen(0, "network", "192.0.2.0/24"), Seen(0, "country", "DE")]
    assert novel(home, [], 0) == ()  # a new user seeds silently
    assert novel(home, seen, 0) == ()
    assert novel(trip, seen, 0) == ("network", "country")
    # a kind never seen (GeoIP just turned on) seeds silently too
    assert novel(trip, seen[:1], 0) == ("network",)
    # an app password's first use is compared with the user's memory...
    assert novel(home, seen, 7) == ()
    assert novel(trip, seen, 7) == ("network", "country")
    # ...and once it has its own, with that alone
    own = [*seen, Seen(7, "network", "198.51.100.0/24")]
    assert novel(home, own, 7) == ("network",)


# -- the memory behind the engine ----------------------------------------------------


@dataclass
class World:
    store: SqlStore
    engine: DecisionEngine
    memory: LocationMemory
    token: str

    def login(self, rip: str, password: str = PW) -> str | None:
        d = self.engine.decide(Login.of("alice", password, rip, "imap"))
        assert d.ok, d
        self.memory.flush()
        return d.new_location


def _memory(store: SqlStore, **kw: object) -> LocationMemory:
    args: dict[str, object] = {"memory_days": 90, "max_per_user": 200, "locate": locate}
    args.update(kw)
    return LocationMemory(store, KINDS, flush_seconds=60, **args)  # type: ignore[arg-type]


@pytest.fixture
def world(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> Iterator[World]:
    s = sqlite_store
    s.add_user("alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("any")])
    phone = [NetworkRule.parse("any", scope="app password phone")]
    token = s.add_app_password("alice", "phone", new_token, networks=phone)
    engine = DecisionEngine(s, fast_hasher)
    memory = _memory(s)
    engine.note_place = memory.note
    w = World(s, engine, memory, token)
    yield w
    w.memory.close()


def test_first_login_seeds_then_new_network_and_country_alert_once(world: World) -> None:
    assert world.login("192.0.2.10") is None  # a new user: silent
    assert world.login("192.0.2.200") is None  # same /24, same country
    assert world.login("203.0.113.5") == "network"  # new /24, known country
    d = world.engine.decide(Login.of("alice", PW, "198.51.100.7", "imap"))
    assert (d.new_location, d.country, d.asn) == ("network,country", "NL", 64500)
    assert world.login("198.51.100.9") is None  # the second time: known
    assert world.login("2001:db8:5::1") == "network"


def test_the_memory_is_shared_through_the_database(
    world: World, fast_hasher: PasswordHasher
) -> None:
    """A second server on the same database (its own engine and memory) knows
    what the first one saw."""
    world.login("192.0.2.10")
    world.login("198.51.100.7")
    other_engine = DecisionEngine(world.store, fast_hasher)
    other = _memory(world.store)
    other_engine.note_place = other.note
    try:
        assert (
            other_engine.decide(Login.of("alice", PW, "198.51.100.99", "imap")).new_location is None
        )
        assert (
            other_engine.decide(Login.of("alice", PW, "203.0.113.1", "imap")).new_location
            == "network"
        )
    finally:
        other.close()


def test_unwritten_places_count_in_this_process(world: World) -> None:
    world.login("192.0.2.10")
    first = world.engine.decide(Login.of("alice", PW, "203.0.113.5", "imap"))
    second = world.engine.decide(Login.of("alice", PW, "203.0.113.6", "imap"))  # before any flush
    assert (first.new_location, second.new_location) == ("network", None)


def test_app_passwords_have_their_own_memory(world: World) -> None:
    world.login("192.0.2.10")
    assert world.login("192.0.2.11", world.token) is None  # its first use, at home
    d = world.engine.decide(Login.of("alice", world.token, "203.0.113.5", "imap"))
    assert (d.new_location, d.credential) == ("network", "phone")
    world.memory.flush()
    # the main password has not been there
    assert world.login("203.0.113.5") == "network"


def test_failures_are_never_remembered(world: World) -> None:
    world.login("192.0.2.10")
    assert not world.engine.decide(Login.of("alice", "wrong", "203.0.113.5", "imap")).ok
    world.memory.flush()
    assert world.login("203.0.113.5") == "network"


def test_forgotten_after_the_memory_days(world: World) -> None:
    world.login("192.0.2.10")
    world.login("203.0.113.5")
    assert purge_locations(world.store, 90, 200, time.time()) == 0
    # 91 days later every place is forgotten: alice is a new user again
    assert purge_locations(world.store, 90, 200, time.time() + 91 * 86400) == 3  # 2 nets, DE
    assert world.login("198.51.100.7") is None


# -- every database --------------------------------------------------------------


def test_each_kind_can_be_switched_off(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> None:
    from saslnetauth.settings import AlertsConfig
    from saslnetauth.store.locations import enabled_kinds

    assert enabled_kinds(AlertsConfig()) == KINDS
    assert enabled_kinds(AlertsConfig(new_location_network=False)) == ("country", "asn")
    assert enabled_kinds(AlertsConfig(False, False, False)) == ()
    sqlite_store.add_user("alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("any")])
    engine = DecisionEngine(sqlite_store, fast_hasher)
    memory = LocationMemory(
        sqlite_store, ("country",), memory_days=90, max_per_user=200, locate=locate
    )
    engine.note_place = memory.note
    try:
        for rip, new in (("192.0.2.1", None), ("203.0.113.1", None), ("198.51.100.1", "country")):
            assert engine.decide(Login.of("alice", PW, rip, "imap")).new_location == new, rip
            memory.flush()
    finally:
        memory.close()


def test_the_alert_environment_of_a_new_place() -> None:
    from saslnetauth.serve.alerts import NEW_LOCATION, alert_environment

    env = alert_environment(
        "alice",
        Login.of("alice", b"", "::ffff:198.51.100.7", "imap"),
        "ok",
        parent={"PATH": "/bin", "SECRET": "x"},
        credential="phone",
        event=NEW_LOCATION,
        details={"new_location": "network,country", "country": "NL", "asn": "64500\n"},
    )
    assert env == {
        "PATH": "/bin",
        "SASLNETAUTH_USER": "alice",
        "SASLNETAUTH_RIP": "198.51.100.7",
        "SASLNETAUTH_SERVICE": "imap",
        "SASLNETAUTH_REASON": "ok",
        "SASLNETAUTH_CREDENTIAL": "phone",
        "SASLNETAUTH_EVENT": "new_location",
        "SASLNETAUTH_NEW_LOCATION": "network,country",
        "SASLNETAUTH_COUNTRY": "NL",
        "SASLNETAUTH_ASN": "64500?",
    }


# -- the in-process memory of known places ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _forget(store: SqlStore, value: str) -> None:
    """What an admin's DELETE does to one remembered place."""
    from saslnetauth.store.schema import user_locations

    with store._conn(write=True) as conn:
        conn.execute(user_locations.delete().where(user_locations.c.value == value))


def test_a_place_known_moments_ago_is_not_read_again_until_its_lifetime_ends(
    world: World,
) -> None:
    clock = Clock()
    world.memory.close()
    world.memory = _memory(world.store, known_seconds=60, monotonic=clock)
    world.engine.note_place = world.memory.note
    assert world.login("192.0.2.10") is None  # a new user: silent
    assert world.login("203.0.113.5") == "network"  # the first login from there alerts
    assert world.login("203.0.113.6") is None
    _forget(world.store, "203.0.113.0/24")
    clock.now += 59
    assert world.login("203.0.113.7") is None  # known in this process for 60 s
    clock.now += 2
    assert world.login("203.0.113.8") == "network"  # forgotten: read again, alerts again
    # the main password's knowledge is not the app password's: its first use elsewhere
    # is still compared with what the user has seen
    assert world.login("198.51.100.7", world.token) == "network,country"


def test_the_memory_of_known_places_is_bounded(world: World) -> None:
    world.memory.close()
    world.memory = _memory(world.store, known_max=2)
    world.engine.note_place = world.memory.note
    for rip in ("192.0.2.10", "203.0.113.5", "198.51.100.7"):
        world.login(rip)
    assert len(world.memory._fresh) == 2
    # the oldest set was forgotten first: its place is read again, and alerts once deleted
    _forget(world.store, "192.0.2.0/24")
    assert world.login("192.0.2.11") == "network"
    # the newest one is still known: no read, no alert
    _forget(world.store, "198.51.100.0/24")
    assert world.login("198.51.100.8") is None
