"""App passwords in the decision engine (SQLite) and in the store (every database)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import NotFoundError
from saslnetauth.policy import apppolicy
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore
from saslnetauth.store.lastused import LastUsedRecorder
from saslnetauth.store.schema import app_passwords, users
from tests.support.apppasswords import PW
from tests.support.apppasswords import add_app_password as _add
from tests.support.apppasswords import user_net as _net

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> float:
        """UNIX time, as the engine's clock gives it."""
        return self.now.timestamp()


class CountingHasher(PasswordHasher):
    """Counts the slow verifications (the dummy one of unknown users goes through verify)."""

    calls = 0

    def verify(self, password: str | bytes, stored: object) -> bool:  # type: ignore[override]
        CountingHasher.calls += 1
        return super().verify(password, stored)  # type: ignore[arg-type]


@dataclass
class World:
    engine: DecisionEngine
    store: SqlStore
    clock: Clock
    tokens: dict[str, str]


@pytest.fixture
def world(sqlite_store: SqlStore) -> Iterator[World]:
    s = sqlite_store
    hasher = CountingHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)
    s.add_user("alice", hasher.hash(PW), networks=[_net("192.0.2.0/24")])
    s.add_user("bob", hasher.hash(PW), networks=[_net("any")])
    s.add_global_network(NetworkRule.parse("203.0.113.0/24", "smtp"))
    tokens = {
        "phone": _add(s, "alice", "phone", "any", services="imap"),
        "office": _add(s, "alice", "office", "198.51.100.0/24"),
        "bare": _add(s, "alice", "bare", services="smtp"),
        "trip": _add(s, "alice", "trip", "any", expires=T0 + timedelta(hours=1)),
        "bobs": _add(s, "bob", "phone", "any"),
    }
    clock = Clock()
    yield World(DecisionEngine(s, hasher, clock=clock), s, clock, tokens)


# credential, rip, service -> verdict, reason, credentials_valid
TABLE = [
    ("phone", "203.0.113.5", "imap", Verdict.OK, Reason.OK, True),
    ("phone", None, "imap", Verdict.OK, Reason.OK, True),  # any is not local... see below
    ("phone", "203.0.113.5", "smtp", Verdict.FAIL, Reason.NO_NETWORK_RULES, True),
    ("office", "198.51.100.7", "smtp", Verdict.OK, Reason.OK, True),
    ("office", "192.0.2.9", "smtp", Verdict.FAIL, Reason.NETWORK, True),  # the user's own net
    ("office", "203.0.113.5", "smtp", Verdict.OK, Reason.OK, True),  # global for smtp
    ("office", "203.0.113.5", "imap", Verdict.FAIL, Reason.NETWORK, True),
    ("bare", "203.0.113.5", "smtp", Verdict.OK, Reason.OK, True),
    ("bare", "203.0.113.5", "imap", Verdict.FAIL, Reason.NO_NETWORK_RULES, True),
    ("bare", "198.51.100.7", "smtp", Verdict.FAIL, Reason.NETWORK, True),
    ("trip", "192.0.2.9", "pop3", Verdict.OK, Reason.OK, True),
]


@pytest.mark.parametrize(("cred", "rip", "svc", "verdict", "reason", "valid"), TABLE)
def test_rule_table(
    world: World,
    cred: str,
    rip: str | None,
    svc: str,
    verdict: Verdict,
    reason: Reason,
    valid: bool,
) -> None:
    if rip is None:  # a login without address matches only `local`, never `any`
        verdict, reason = Verdict.FAIL, Reason.NETWORK
    d = world.engine.decide(Login.of("alice", world.tokens[cred], rip, svc))
    assert (d.verdict, d.reason, d.credentials_valid) == (verdict, reason, valid)
    assert d.credential == cred and d.user == "alice"
    if d.ok:
        assert d.matched and d.network_ok
    # the wrong secret with the same identifier: bad_password, for that credential
    wrong = world.tokens[cred][:-1] + ("a" if world.tokens[cred][-1] != "a" else "b")
    d = world.engine.decide(Login.of("alice", wrong, rip, svc))
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.BAD_PASSWORD, cred)


def test_the_main_password_keeps_its_own_networks(world: World) -> None:
    d = world.engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    assert d.ok and d.credential is None
    # the phone admits from anywhere, the main password stays office-only
    d = world.engine.decide(Login.of("alice", PW, "198.51.100.7", "imap"))
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.NETWORK, None)
    assert d.credentials_valid and d.network_ok is False
    assert world.engine.decide(Login.of("alice", world.tokens["phone"], "198.51.100.7", "imap")).ok


def test_the_matched_rule_names_the_app_password(world: World) -> None:
    d = world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
    assert d.matched == "app password phone network any (imap)"
    d = world.engine.decide(Login.of("alice", world.tokens["office"], "203.0.113.5", "smtp"))
    assert d.matched == "global network 203.0.113.0/24 (smtp)"


def test_typed_as_people_type_it(world: World) -> None:
    token = world.tokens["phone"]
    for typed in (token.upper(), token.replace("-", ""), token.replace("-", " ")):
        assert world.engine.decide(Login.of("alice", typed, "203.0.113.5", "imap")).ok


def test_expired_never_matches(world: World) -> None:
    token = world.tokens["trip"]
    assert world.engine.decide(Login.of("alice", token, "203.0.113.5", "pop3")).ok
    assert world.engine.triage(Login.of("alice", token, "203.0.113.5", "pop3")).could_succeed
    world.clock.now = T0 + timedelta(hours=1)  # the expiry itself: expired
    d = world.engine.decide(Login.of("alice", token, "203.0.113.5", "pop3"))
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.EXPIRED, "trip")
    assert d.credentials_valid  # right secret, but not a stolen-credential reason
    c = world.engine.triage(Login.of("alice", token, "203.0.113.5", "pop3"))
    assert not c.could_succeed and c.expired


def test_another_users_token_is_checked_as_the_main_password(world: World) -> None:
    CountingHasher.calls = 0
    d = world.engine.decide(Login.of("alice", world.tokens["bobs"], "203.0.113.5", "imap"))
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.BAD_PASSWORD, None)
    assert CountingHasher.calls == 1
    assert world.engine.decide(Login.of("bob", world.tokens["bobs"], "203.0.113.5", "imap")).ok


def test_deleted_takes_effect_on_the_next_login(world: World) -> None:
    token = world.tokens["phone"]
    assert world.engine.decide(Login.of("alice", token, "203.0.113.5", "imap")).ok
    world.store.delete_app_password("alice", "phone")
    d = world.engine.decide(Login.of("alice", token, "203.0.113.5", "imap"))
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.BAD_PASSWORD, None)
    with pytest.raises(NotFoundError, match="no app password phone"):
        world.store.delete_app_password("alice", "phone")


def test_disabled_user_refuses_every_app_password(world: World) -> None:
    world.store.set_enabled("alice", False)
    for label in ("phone", "office", "bare", "trip"):
        d = world.engine.decide(Login.of("alice", world.tokens[label], "203.0.113.5", "imap"))
        assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.DISABLED, label)


def test_deleting_the_user_deletes_its_app_passwords(world: World) -> None:
    world.store.delete_user("alice")
    with world.store.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(app_passwords)).scalar()
    assert left == 1  # bob's
    world.store.add_user("alice", None, networks=[_net("any")])
    d = world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
    assert d.reason is Reason.NO_PASSWORD and d.credential is None


def test_users_without_a_main_password_or_with_pam_may_have_app_passwords(
    world: World,
) -> None:
    world.store.add_user("dev", None, networks=[_net("any")])
    world.store.add_user("sysuser", None, backend="pam", networks=[_net("any")])
    for name in ("dev", "sysuser"):
        token = _add(world.store, name, "phone", "any")
        d = world.engine.decide(Login.of(name, token, "203.0.113.5", "imap"))
        assert d.ok and d.credential == "phone"
    # PAM stays for the main password (not enabled here: temporary failure, never OK)
    assert (
        world.engine.decide(Login.of("sysuser", PW, "203.0.113.5", "imap")).verdict
        is Verdict.TEMPFAIL
    )


def _counting_verify(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    fast = [0]
    real = apppolicy.verify_token

    def counted(normalised: str, stored: str) -> bool:
        fast[0] += 1
        return real(normalised, stored)

    monkeypatch.setattr(apppolicy, "verify_token", counted)
    return fast


@pytest.mark.parametrize("count", [0, 1, 20])
def test_at_most_one_slow_hash_whatever_the_number_of_app_passwords(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """The issue's bound: a login costs at most one slow hash (and at most one fast one)."""
    hasher = CountingHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)
    sqlite_store.add_user("many", hasher.hash(PW), networks=[_net("192.0.2.0/24")])
    tokens = [_add(sqlite_store, "many", f"dev{i}", "any") for i in range(count)]
    other = new_token()[0]  # the shape of a token, naming none of them
    engine = DecisionEngine(sqlite_store, hasher)
    fast = _counting_verify(monkeypatch)
    attempts = [
        (PW, "192.0.2.9", True, 1, 0),
        (PW, "203.0.113.9", False, 1, 0),
        ("wrong", "192.0.2.9", False, 1, 0),
        (other, "192.0.2.9", False, 1, 0),
    ]
    for token in tokens:
        attempts += [
            (token, "203.0.113.9", True, 0, 1),
            (token[:-1] + ("a" if token[-1] != "a" else "b"), "203.0.113.9", False, 0, 1),
        ]
    for password, rip, ok, slow, quick in attempts:
        CountingHasher.calls, fast[0] = 0, 0
        d = engine.decide(Login.of("many", password, rip, "imap"))
        assert d.ok is ok
        assert (CountingHasher.calls, fast[0]) == (slow, quick), (password == PW, d)
    CountingHasher.calls = 0
    engine.decide(Login.of("nobody", tokens[0] if tokens else other, "192.0.2.9", "imap"))
    assert CountingHasher.calls == 1  # the unknown user's dummy hash, as before


def test_classification_counts_the_named_credentials_networks(world: World) -> None:
    """The networks of the credential the token identifier names, alone: without one
    (a guess of the main password), an app password valid from anywhere counts for
    nothing (issue 21 item 3: it would tell the name from an unknown one)."""
    engine = world.engine
    assert engine.triage(
        Login.of("alice", world.tokens["trip"], "198.18.0.1", "smtp")
    ).could_succeed  # any
    assert not engine.triage(
        Login.of("alice", b"", "198.18.0.1", "smtp")
    ).could_succeed  # main password
    assert not engine.triage(
        Login.of("alice", world.tokens["bobs"], "198.18.0.1", "smtp")
    ).could_succeed
    world.clock.now = T0 + timedelta(hours=2)  # trip has expired
    assert not engine.triage(
        Login.of("alice", world.tokens["trip"], "198.18.0.1", "smtp")
    ).could_succeed
    assert engine.triage(
        Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap")
    ).could_succeed
    assert not engine.triage(
        Login.of("alice", world.tokens["phone"], "198.18.0.1", "smtp")
    ).could_succeed
    office = engine.triage(Login.of("alice", world.tokens["office"], "198.51.100.7", "smtp"))
    assert office.could_succeed and office.app is not None and office.app.label == "office"
    assert not engine.triage(Login.of("alice", b"", "198.51.100.7", "smtp")).could_succeed
    world.store.delete_app_password("alice", "phone")
    assert not engine.triage(
        Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap")
    ).could_succeed
    assert engine.triage(
        Login.of("alice", b"", "192.0.2.9", "imap")
    ).could_succeed  # the main password's


def _write(store: SqlStore, label: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(app_passwords.update().where(app_passwords.c.label == label).values(**values))


@pytest.mark.parametrize(
    "values",
    [
        {"secret_hash": "{PLAIN}secret"},
        {"services": "imap,bad/svc"},
        {"expires_at": "next friday"},
    ],
)
def test_a_row_a_script_broke_admits_nothing_and_is_tempfail_when_named(
    world: World, caplog: pytest.LogCaptureFixture, values: dict[str, object]
) -> None:
    world.clock.now = T0 + timedelta(hours=2)  # trip (any) has expired
    if "expires_at" in values:  # text no timestamp column of a server would take
        with world.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE app_passwords SET expires_at = :v WHERE label = 'phone'"),
                {"v": values["expires_at"]},
            )
    else:
        _write(world.store, "phone", **values)
    with caplog.at_level(logging.ERROR, logger="saslnetauth"):
        for _ in range(3):
            d = world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
            assert (d.verdict, d.reason, d.credential) == (
                Verdict.TEMPFAIL,
                Reason.BACKEND_ERROR,
                "phone",
            )
            assert not world.engine.triage(
                Login.of("alice", b"", "203.0.113.5", "imap")
            ).could_succeed
    logged = [r for r in caplog.records if "invalid app password row" in r.getMessage()]
    assert len(logged) == 1  # once, not at every login
    # the others still work
    assert world.engine.decide(Login.of("alice", world.tokens["office"], "198.51.100.7", "imap")).ok


def test_an_expiry_written_as_text_by_a_script_is_honoured(world: World) -> None:
    with world.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE app_passwords SET expires_at = '2026-12-01T11:00:00Z' WHERE label = 'phone'"
            )
        )
    d = world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
    assert (d.verdict, d.reason) == (Verdict.FAIL, Reason.EXPIRED)


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_no_token_in_logs_plain_or_base64(
    world: World, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    token = world.tokens["phone"]
    with caplog.at_level(level, logger="saslnetauth"):
        for rip, svc in (("203.0.113.5", "imap"), ("203.0.113.5", "smtp"), (None, "imap")):
            world.engine.decide(Login.of("alice", token, rip, svc))
            world.engine.decide(Login.of("alice", token + "x", rip, svc))
            world.engine.decide(Login.of("nobody", token, rip, svc))
    assert "credential=phone" in caplog.text
    letters = token.replace("-", "")
    for form in (token, letters, letters[7:], token[10:]):
        for text in (form, base64.b64encode(form.encode()).decode().rstrip("=")):
            assert text not in caplog.text
    assert base64.b64encode(f"\0alice\0{token}".encode()).decode() not in caplog.text


def test_the_log_line_names_the_credential(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="saslnetauth.auth"):
        world.engine.decide(Login.of("alice", world.tokens["office"], "192.0.2.9", "smtp"))
        world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "saslnetauth.auth"]
    assert lines == [
        (
            logging.WARNING,
            "auth fail: user=alice service=smtp rip=192.0.2.9 credential=office "
            "reason=network credentials_valid=yes",
        ),
        (
            logging.INFO,
            "auth ok: user=alice service=imap rip=203.0.113.5 credential=phone "
            'rule="app password phone network any (imap)"',
        ),
    ]


def test_last_use_is_noted_only_after_an_ok(world: World) -> None:
    used: list[int] = []
    world.engine.on_app_password_used = used.append
    world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "smtp"))
    world.engine.decide(Login.of("alice", world.tokens["phone"] + "x", "203.0.113.5", "imap"))
    assert used == []
    world.engine.decide(Login.of("alice", world.tokens["phone"], "203.0.113.5", "imap"))
    _, records = world.store.list_app_passwords("alice")
    assert used == [next(r.id for r in records if r.label == "phone")]


# -- the store, on SQLite, PostgreSQL and MariaDB ------------------------------------------


def test_last_used_recorder_writes_in_the_background(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher
) -> None:
    sqlite_store.add_user("erin", None)
    _add(sqlite_store, "erin", "phone", "any")
    aid = sqlite_store.list_app_passwords("erin")[1][0].id
    rec = LastUsedRecorder(sqlite_store, flush_seconds=3600)
    when = T0.timestamp()
    rec.touch(aid, when)
    assert sqlite_store.list_app_passwords("erin")[1][0].last_used_at is None  # not yet
    rec.close()  # writes what is pending
    assert sqlite_store.list_app_passwords("erin")[1][0].last_used_at == T0


def test_a_users_row_keeps_its_shape_without_app_passwords(sqlite_store: SqlStore) -> None:
    sqlite_store.add_user("fred", None, networks=[_net("192.0.2.0/24"), _net("local")])
    fred = sqlite_store.get_user("fred")
    assert fred is not None and len(fred.networks) == 2 and fred.app_passwords == ()
    with sqlite_store.engine.begin() as conn:
        assert conn.execute(sa.select(users.c.name)).scalars().all() == ["fred"]


def _documented_rows() -> list[list[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "app-passwords.md").read_text()
    table = text.split("| password | client | service | verdict | why |", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    return rows


def test_the_documented_rule_table(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> None:
    """docs/app-passwords.md: the table of examples is what the engine does."""
    s = sqlite_store
    s.add_user("alice", fast_hasher.hash(PW), networks=[_net("192.0.2.0/24")])
    s.add_user("bob", fast_hasher.hash(PW), networks=[_net("any")])
    s.add_global_network(NetworkRule.parse("203.0.113.0/24", "smtp"))
    tokens = {
        "main": PW,
        "phone": _add(s, "alice", "phone", "any", services="imap"),
        "laptop": _add(s, "alice", "laptop", "198.51.100.0/24"),
        "relay": _add(s, "alice", "relay", services="smtp"),
    }
    bobs = _add(s, "bob", "phone", "any")
    clock = Clock()
    engine = DecisionEngine(s, fast_hasher, clock=clock)
    rows = _documented_rows()
    assert len(rows) == 15
    special = 0
    for password, client, service, verdict, _ in rows:
        rip = "198.18.0.1" if client in ("anywhere", "") else client
        services = ["imap", "smtp", "pop3"] if service in ("any", "") else [service]
        want = Verdict.OK if verdict == "OK" else Verdict.FAIL
        reason = Reason.OK if verdict == "OK" else Reason(verdict.split()[1].strip("`"))
        token = tokens.get(password)
        if password == "phone, one letter wrong":
            token = tokens["phone"][:-1] + ("a" if tokens["phone"][-1] != "a" else "b")
        elif password == "phone, after its expiry":
            with s.engine.begin() as conn:
                conn.execute(
                    app_passwords.update()
                    .where(app_passwords.c.label == "phone")
                    .values(expires_at=T0 - timedelta(seconds=1))
                )
            token = tokens["phone"]
        elif password.startswith("any of them"):
            s.set_enabled("alice", False)
            for label in ("phone", "laptop", "relay"):
                d = engine.decide(Login.of("alice", tokens[label], "198.51.100.7", "smtp"))
                assert (d.verdict, d.reason, d.credential) == (want, reason, label)
            s.set_enabled("alice", True)
            special += 1
            continue
        elif password.startswith("bob's"):
            s.delete_app_password("alice", "relay")
            for other in (bobs, tokens["relay"]):
                d = engine.decide(Login.of("alice", other, "203.0.113.5", "smtp"))
                assert (d.verdict, d.reason, d.credential) == (want, reason, None)
            special += 1
            continue
        assert token is not None, password
        for svc in services:
            d = engine.decide(Login.of("alice", token, rip, svc))
            assert (d.verdict, d.reason) == (want, reason), (password, client, svc, d)
    assert special == 2


def test_country_terms_in_app_password_networks(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher, tmp_path: Path
) -> None:
    """An app password's networks may be country/ASN terms like any network; the
    main password's own terms are matched with the same locator."""
    from saslnetauth.policy.rules.geoip import GeoLocator
    from saslnetauth.settings import GeoipConfig
    from tests.support.geoipdb import write_countries

    db = write_countries(tmp_path / "c.mmdb", {"192.0.2.0/24": "DE", "198.51.100.0/24": "FR"})
    sqlite_store.add_user("gus", fast_hasher.hash(PW), networks=[_net("country:FR")])
    phone = _add(sqlite_store, "gus", "phone", "country:DE", services="imap")
    engine = DecisionEngine(
        sqlite_store, fast_hasher, geoip=GeoLocator(GeoipConfig(country_db=str(db)))
    )
    d = engine.decide(Login.of("gus", phone, "192.0.2.7", "imap"))
    assert d.ok and d.matched == "app password phone network country:DE (imap)"
    d = engine.decide(Login.of("gus", phone, "198.51.100.7", "imap"))  # France: the main password's
    assert (d.verdict, d.reason, d.credential, d.country) == (
        Verdict.FAIL,
        Reason.NETWORK,
        "phone",
        "FR",
    )
    assert engine.decide(Login.of("gus", PW, "198.51.100.7", "imap")).ok
    d = engine.decide(Login.of("gus", PW, "192.0.2.7", "imap"))  # Germany: the phone's only
    assert (d.verdict, d.reason, d.credential) == (Verdict.FAIL, Reason.NETWORK, None)
    assert engine.triage(Login.of("gus", phone, "192.0.2.7", "imap")).could_succeed
    assert not engine.triage(
        Login.of("gus", b"", "192.0.2.7", "imap")
    ).could_succeed  # main: FR only
    assert engine.triage(Login.of("gus", b"", "198.51.100.7", "imap")).could_succeed
    assert not engine.triage(Login.of("gus", phone, "192.0.2.7", "smtp")).could_succeed
    engine.close()
