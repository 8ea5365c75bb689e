"""Country and ASN terms: parsing and matching (netrules), the GeoIP databases
(saslnetauth.policy.rules.geoip) on .mmdb files the tests write, and the engine's use of both.

Fail closed throughout: no database, an unreadable one or an address the
database does not know admit nobody through a term."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saslnetauth.admin.exporters import NO_NETWORK, dovecot_passwd_file
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import InvalidNetworkError
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.geoip import FOUND, UNAVAILABLE, UNKNOWN, GeoLocator
from saslnetauth.policy.rules.netrules import (
    Address,
    Geo,
    NetworkRule,
    RuleSet,
    merged_match,
    parse_address,
)
from saslnetauth.policy.rules.netterms import COUNTRY_CODES
from saslnetauth.policy.rules.networks import parse_network
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.serve.metrics import Metrics
from saslnetauth.settings import GeoipConfig
from saslnetauth.store import SqlStore
from tests.support.geoipdb import replace_atomically, write_asns, write_countries
from tests.support.metrics import plain, samples

PW = "c0rrect horse"

# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec", "country", "asn"),
    [
        ("country:DE", "country:DE", "DE", None),
        ("country:de", "country:DE", "DE", None),
        (" COUNTRY:De ", "country:DE", "DE", None),
        ("country:XK", "country:XK", "XK", None),
        ("asn:3320", "asn:3320", None, 3320),
        ("AS3320", "asn:3320", None, 3320),
        ("as3320", "asn:3320", None, 3320),
        ("ASN3320", "asn:3320", None, 3320),
        ("asn:AS3320", "asn:3320", None, 3320),
        ("asn:1", "asn:1", None, 1),
        ("asn:4294967295", "asn:4294967295", None, 4294967295),
    ],
)
def test_terms_parse_to_canonical_form(
    text: str, spec: str, country: str | None, asn: int | None
) -> None:
    rule = NetworkRule.parse(text, "smtp", scope="user")
    assert (rule.spec, rule.country, rule.asn, rule.networks, rule.local) == (
        spec,
        country,
        asn,
        (),
        False,
    )
    assert rule.services == frozenset({"smtp"})
    assert parse_network(text) == (spec, (), False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("country:UK", "did you mean country:GB?"),
        ("country:EL", "did you mean country:GR?"),
        ("country:XX", "not an ISO 3166-1 alpha-2 country code"),
        ("country:DEU", "not an ISO 3166-1 alpha-2 country code"),
        ("country:D", "not an ISO 3166-1 alpha-2 country code"),
        ("country:", "write a country as country:DE"),
        ("countr:DE", "write a country as country:DE"),
        ("country:\uff24\uff25", "not an ISO 3166-1 alpha-2 country code"),
        ("asn:0", "1 to 4294967295"),
        ("asn:4294967296", "1 to 4294967295"),
        ("asn:99999999999", "write an autonomous system as asn:3320"),
        ("asn:", "write an autonomous system as asn:3320"),
        ("as-3320", "write an autonomous system as asn:3320"),
        ("asn:\uff13\uff13\uff12\uff10", "write an autonomous system as asn:3320"),
        ("asn:3320/24", "write an autonomous system as asn:3320"),
        ("AS1.10", "write the number as asn:65546"),
        ("cc:DE", "country:DE or asn:3320"),
    ],
)
def test_bad_terms_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidNetworkError, match=message.replace("?", r"\?")):
        NetworkRule.parse(text)


def test_every_listed_country_code_parses() -> None:
    assert len(COUNTRY_CODES) == 250  # 249 assigned by ISO 3166-1, and XK
    for code in COUNTRY_CODES:
        assert NetworkRule.parse(f"country:{code.lower()}").country == code


@given(st.text(max_size=40))
def test_term_parser_never_crashes(text: str) -> None:
    try:
        rule = NetworkRule.parse(text)
    except InvalidNetworkError:
        return
    # whatever parses has a canonical form that parses to itself
    again = NetworkRule.parse(rule.spec)
    assert (again.spec, again.country, again.asn, again.networks) == (
        rule.spec,
        rule.country,
        rule.asn,
        rule.networks,
    )


# -- matching ------------------------------------------------------------------------

V4 = parse_address("192.0.2.9")
assert V4 is not None


def _set(*rules: tuple[str, str | None]) -> RuleSet:
    return RuleSet(NetworkRule.parse(text, services, scope="user") for text, services in rules)


def test_terms_match_the_location_given() -> None:
    rs = _set(("country:DE", None), ("asn:3320", "imap"), ("198.51.100.0/24", None))
    assert rs.match(V4, "smtp") is None  # no location: no term matches
    assert rs.match(V4, "smtp", Geo("DE", None)) is not None
    assert rs.match(V4, "smtp", Geo("FR", None)) is None
    assert rs.match(V4, "smtp", Geo(None, 3320)) is None  # the ASN term is imap only
    hit = rs.match(V4, "imap", Geo("FR", 3320))
    assert hit is not None and hit.spec == "asn:3320"
    assert rs.match(V4, "imap", Geo(None, None)) is None
    assert rs.match(None, "smtp", Geo("DE", 3320)) is None  # no address: only 'local'
    assert rs.wants_geo("smtp") and rs.wants_geo("imap")
    assert not _set(("asn:1", "imap")).wants_geo("smtp")
    assert not _set(("any", None)).wants_geo("smtp")


class CountingLocate:
    def __init__(self, geo: Geo) -> None:
        self.geo = geo
        self.calls: list[Address] = []

    def __call__(self, addr: Address) -> Geo:
        self.calls.append(addr)
        return self.geo


def test_merged_match_looks_up_only_when_a_term_could_decide() -> None:
    user = _set(("country:DE", "smtp"))
    glob = _set(("192.0.2.0/24", None), ("asn:64500", None))
    locate = CountingLocate(Geo("DE", 64500))
    # a network admits the address: no lookup
    assert merged_match((user, glob), V4, "smtp", locate, now=0.0) == (True, glob.rules[0])
    assert locate.calls == []
    other = parse_address("203.0.113.1")
    assert other is not None
    applicable, rule = merged_match((user, glob), other, "smtp", locate, now=0.0)
    assert applicable and rule is not None and rule.spec == "country:DE"
    assert locate.calls == [other]  # once for both sets
    # no term applies to the service: no lookup
    locate.calls.clear()
    assert merged_match((_set(("country:DE", "smtp")),), other, "imap", locate, now=0.0) == (
        False,
        None,
    )
    assert merged_match((_set(("10.0.0.0/8", None)),), other, "imap", locate, now=0.0) == (
        True,
        None,
    )
    assert locate.calls == []
    # no address: terms never match, nothing is looked up
    assert merged_match((user,), None, "smtp", locate, now=0.0) == (True, None)
    assert locate.calls == []
    # without a locate function terms match nothing (fail closed)
    assert merged_match((user,), other, "smtp", now=0.0) == (True, None)


# -- the databases -------------------------------------------------------------------

COUNTRIES = {
    "192.0.2.0/25": "DE",
    "192.0.2.128/25": "FR",
    "2001:db8:1::/48": "NL",
    "2001:db8:2::/48": "DE",
}
ASNS = {"192.0.2.0/24": 3320, "2001:db8::/32": 64500}


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_countries(tmp_path / "country.mmdb", COUNTRIES),
        write_asns(tmp_path / "asn.mmdb", ASNS),
    )


def _cfg(country: Path | str = "", asn: Path | str = "", **kw: object) -> GeoipConfig:
    return GeoipConfig(country_db=str(country), asn_db=str(asn), **kw)  # type: ignore[arg-type]


def _where(loc: GeoLocator, text: str) -> tuple[Geo, str]:
    addr = parse_address(text)
    assert addr is not None
    return loc.locate(addr)


@pytest.mark.parametrize(
    ("rip", "geo", "status"),
    [
        ("192.0.2.9", Geo("DE", 3320), FOUND),
        ("192.0.2.200", Geo("FR", 3320), FOUND),
        ("::ffff:192.0.2.9", Geo("DE", 3320), FOUND),  # IPv4-mapped: looked up as IPv4
        ("2001:db8:1::5", Geo("NL", 64500), FOUND),
        ("2001:db8:2:ffff::1", Geo("DE", 64500), FOUND),
        ("2001:db8:3::1", Geo(None, 64500), UNKNOWN),  # in the ASN database only
        ("198.51.100.1", Geo(None, None), UNKNOWN),
        ("2001:db9::1", Geo(None, None), UNKNOWN),
    ],
)
def test_lookups(dbs: tuple[Path, Path], rip: str, geo: Geo, status: str) -> None:
    loc = GeoLocator(_cfg(*dbs))
    assert _where(loc, rip) == (geo, status)


def test_ipv4_only_database_does_not_know_ipv6(tmp_path: Path) -> None:
    db = write_countries(tmp_path / "v4.mmdb", {"192.0.2.0/24": "SE"}, ip_version=4)
    loc = GeoLocator(_cfg(db))
    assert _where(loc, "192.0.2.1") == (Geo("SE", None), FOUND)
    assert _where(loc, "2001:db8::1") == (Geo(None, None), UNKNOWN)


def test_one_database_configured(dbs: tuple[Path, Path]) -> None:
    loc = GeoLocator(_cfg(asn=dbs[1]))
    assert _where(loc, "192.0.2.9") == (Geo(None, 3320), FOUND)


def test_fail_closed_without_usable_databases(
    tmp_path: Path, dbs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a maxmind database\n" * 100)
    caplog.set_level(logging.INFO, logger="saslnetauth.geoip")
    missing = GeoLocator(_cfg(tmp_path / "missing.mmdb", dbs[1]))
    assert _where(missing, "192.0.2.9") == (Geo(None, 3320), UNAVAILABLE)
    broken = GeoLocator(_cfg(garbage))
    assert _where(broken, "192.0.2.9") == (Geo(None, None), UNAVAILABLE)
    assert "not a usable MaxMind DB file" in str(broken.states()[0].error)
    none = GeoLocator(_cfg())
    assert not none.configured
    assert _where(none, "192.0.2.9") == (Geo(None, None), UNAVAILABLE)
    assert _where(none, "192.0.2.9") == (Geo(None, None), UNAVAILABLE)
    # each state is logged once, however often it is checked or looked up
    missing.refresh()
    missing.refresh()
    text = caplog.text
    assert text.count("geoip database unavailable") == 2, text
    assert text.count("no [geoip] database is configured") == 1, text


def test_old_database_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = write_countries(
        tmp_path / "old.mmdb", {"192.0.2.0/24": "DE"}, build_epoch=time.time() - 50 * 86400
    )
    caplog.set_level(logging.INFO, logger="saslnetauth.geoip")
    loc = GeoLocator(_cfg(old, max_age_days=45))
    assert "geoip database is old" in caplog.text and "age_days=50" in caplog.text
    assert _where(loc, "192.0.2.1") == (Geo("DE", None), FOUND)  # old is not unusable
    state = loc.states()[0]
    assert state.age_days() is not None and 49.9 < state.age_days() < 50.1  # type: ignore[operator]


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_replaced_database_is_reloaded_without_stalling_lookups(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An updater renames a new file into place: the watcher opens it off the lookup
    path and swaps it in; lookups running all the while never fail or block."""
    target = write_countries(tmp_path / "country.mmdb", {"192.0.2.0/24": "DE"})
    caplog.set_level(logging.INFO, logger="saslnetauth.geoip")
    loc = GeoLocator(_cfg(target, check_seconds=0.1), watch=True)
    seen: set[tuple[Geo, str]] = set()
    stop = threading.Event()
    slowest = [0.0]

    def hammer() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            seen.add(_where(loc, "192.0.2.1"))
            slowest[0] = max(slowest[0], time.perf_counter() - t)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        new = write_countries(tmp_path / "new.mmdb", {"192.0.2.0/24": "FR"})
        replace_atomically(target, new)
        _wait(lambda: _where(loc, "192.0.2.1")[0].country == "FR")
        # replaced by something unreadable: fail closed, not the old answer
        bad = tmp_path / "bad.mmdb"
        bad.write_bytes(b"\0" * 4096)
        replace_atomically(target, bad)
        _wait(lambda: _where(loc, "192.0.2.1") == (Geo(None, None), UNAVAILABLE))
        # and back
        replace_atomically(target, write_countries(tmp_path / "n2.mmdb", {"192.0.2.0/24": "NL"}))
        _wait(lambda: _where(loc, "192.0.2.1")[0].country == "NL")
    finally:
        stop.set()
        worker.join()
        loc.close()
    assert seen <= {
        (Geo("DE", None), FOUND),
        (Geo("FR", None), FOUND),
        (Geo(None, None), UNAVAILABLE),
        (Geo("NL", None), FOUND),
    }, seen
    assert caplog.text.count("geoip database loaded") == 3
    assert not loc._thread or not loc._thread.is_alive()


def test_database_rewritten_in_place_is_reloaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = write_countries(tmp_path / "country.mmdb", {"192.0.2.0/24": "DE"})
    loc = GeoLocator(_cfg(target))
    data = write_countries(tmp_path / "x.mmdb", {"192.0.2.0/24": "FR"}).read_bytes()
    caplog.set_level(logging.INFO, logger="saslnetauth.geoip")
    with open(target, "r+b") as fh:  # same inode, new content
        fh.write(data)
        fh.truncate()
    later = time.time() + 2
    import os

    os.utime(target, (later, later))
    assert loc.refresh()
    assert _where(loc, "192.0.2.1")[0].country == "FR"
    assert "changed in place" in caplog.text


# -- the engine ----------------------------------------------------------------------


@pytest.fixture
def engine(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher, dbs: tuple[Path, Path]
) -> Iterator[DecisionEngine]:
    s, h = sqlite_store, fast_hasher
    s.add_user(
        "alice",
        h.hash(PW),
        networks=[
            NetworkRule.parse("country:DE", scope="user"),
            NetworkRule.parse("asn:64500", "imap", scope="user"),
        ],
    )
    s.add_user("bob", h.hash(PW), networks=[NetworkRule.parse("198.51.100.0/24", scope="user")])
    s.add_global_network(NetworkRule.parse("country:NL", "pop3"))
    eng = DecisionEngine(s, h, geoip=GeoLocator(_cfg(*dbs)))
    yield eng
    eng.close()


ENGINE_TABLE = [
    ("alice", PW, "192.0.2.9", "smtp", Verdict.OK, Reason.OK, "user network country:DE"),
    ("alice", PW, "::ffff:192.0.2.9", "smtp", Verdict.OK, Reason.OK, "country:DE"),
    ("alice", PW, "2001:db8:2::1", "smtp", Verdict.OK, Reason.OK, "country:DE"),
    ("alice", PW, "192.0.2.200", "smtp", Verdict.FAIL, Reason.NETWORK, None),
    ("alice", PW, "2001:db8:1::1", "imap", Verdict.OK, Reason.OK, "asn:64500"),
    ("alice", PW, "2001:db8:1::1", "smtp", Verdict.FAIL, Reason.NETWORK, None),
    ("alice", PW, "2001:db8:1::1", "pop3", Verdict.OK, Reason.OK, "global network country:NL"),
    ("alice", PW, "198.51.100.1", "smtp", Verdict.FAIL, Reason.NETWORK, None),  # unknown
    ("alice", PW, None, "smtp", Verdict.FAIL, Reason.NETWORK, None),
    ("alice", "wrong", "192.0.2.9", "smtp", Verdict.FAIL, Reason.BAD_PASSWORD, None),
    ("nobody", PW, "2001:db8:1::1", "pop3", Verdict.FAIL, Reason.UNKNOWN_USER, None),
    ("bob", PW, "198.51.100.1", "smtp", Verdict.OK, Reason.OK, "198.51.100.0/24"),
]


@pytest.mark.parametrize(("user", "pw", "rip", "svc", "verdict", "reason", "rule"), ENGINE_TABLE)
def test_engine_with_terms(
    engine: DecisionEngine,
    user: str,
    pw: str,
    rip: str | None,
    svc: str,
    verdict: Verdict,
    reason: Reason,
    rule: str | None,
) -> None:
    d = engine.decide(Login.of(user, pw, rip, svc))
    assert (d.verdict, d.reason) == (verdict, reason)
    if rule is not None:
        assert d.matched is not None and rule in d.matched


def test_unknown_name_classifies_like_a_user_through_global_terms(engine: DecisionEngine) -> None:
    assert engine.triage(Login.of("nobody", b"", "2001:db8:1::1", "pop3")).could_succeed
    assert not engine.triage(Login.of("nobody", b"", "192.0.2.9", "pop3")).could_succeed


def test_failures_carry_where_they_came_from(
    engine: DecisionEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="saslnetauth.auth")
    d = engine.decide(Login.of("alice", PW, "192.0.2.200", "smtp"))
    assert (d.country, d.asn, d.geoip) == ("FR", 3320, FOUND)
    assert "reason=network credentials_valid=yes country=FR asn=3320" in caplog.text
    d = engine.decide(Login.of("bob", "wrong", "::ffff:192.0.2.1", "smtp"))  # no term involved
    assert (d.country, d.asn, d.geoip) == ("DE", 3320, FOUND)
    assert "reason=bad_password country=DE asn=3320" in caplog.text
    d = engine.decide(Login.of("alice", PW, "198.51.100.1", "smtp"))
    assert (d.country, d.asn, d.geoip) == (None, None, UNKNOWN)
    ok = engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    assert ok.ok and (ok.country, ok.asn, ok.geoip) == (None, None, None)
    assert "auth ok: user=alice service=smtp rip=192.0.2.9 rule=" in caplog.text
    assert "country=DE" not in caplog.text.split("auth ok:")[1].splitlines()[0]


def test_engine_fails_closed_when_the_database_goes(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher, tmp_path: Path
) -> None:
    target = write_countries(tmp_path / "c.mmdb", {"192.0.2.0/24": "DE"})
    sqlite_store.add_user(
        "alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("country:DE", scope="user")]
    )
    loc = GeoLocator(_cfg(target))
    eng = DecisionEngine(sqlite_store, fast_hasher, geoip=loc)
    assert eng.decide(Login.of("alice", PW, "192.0.2.1", "smtp")).ok
    target.unlink()
    loc.refresh()
    d = eng.decide(Login.of("alice", PW, "192.0.2.1", "smtp"))
    assert (d.verdict, d.reason, d.geoip) == (Verdict.FAIL, Reason.NETWORK, UNAVAILABLE)
    # without any locator the term admits nobody either
    assert (
        DecisionEngine(sqlite_store, fast_hasher)
        .decide(Login.of("alice", PW, "192.0.2.1", "smtp"))
        .reason
        is Reason.NETWORK
    )


# -- export, metrics -----------------------------------------------------------------


def test_passwd_file_export_leaves_terms_out(fast_hasher: PasswordHasher) -> None:
    def user(name: str, *nets: str) -> UserRecord:
        rules = RuleSet(NetworkRule.parse(n, scope="user") for n in nets)
        return UserRecord(1, name, fast_hasher.hash(PW), True, rules=rules)

    result = dovecot_passwd_file(
        [user("alice", "country:DE"), user("bob", "192.0.2.0/24", "asn:3320")],
        [NetworkRule.parse("country:FR"), NetworkRule.parse("asn:1", "smtp")],
        ["imap", "pop3"],
        fast_hasher,
    )
    alice, bob = result.lines
    assert alice.endswith(f"allow_nets={NO_NETWORK}")  # fail closed
    assert bob.endswith("allow_nets=192.0.2.0/24")
    assert "country" not in result.text and "asn" not in result.text
    assert result.terms_left_out == 3  # alice's, bob's and the global one for imap+pop3
    assert result.rules_left_out == 1  # the smtp-only one, for its services


def test_metrics_show_the_databases_and_the_located_failures() -> None:
    m = Metrics()
    m.count_located(FOUND)
    m.count_located(FOUND)
    m.count_located(UNAVAILABLE)
    m.geoip = [("country", True, 1_700_000_000), ("asn", False, None)]
    got = samples(m.render())
    assert got[plain("saslnetauth_failures_located_total", result="found")] == 2
    assert got[plain("saslnetauth_failures_located_total", result="unavailable")] == 1
    assert got[plain("saslnetauth_geoip_database_loaded", database="country")] == 1
    assert got[plain("saslnetauth_geoip_database_loaded", database="asn")] == 0
    key = plain("saslnetauth_geoip_database_build_timestamp_seconds", database="country")
    assert got[key] == 1_700_000_000
