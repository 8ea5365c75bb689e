"""The decision engine's whole verdict table, on a real SQLite store."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore
from saslnetauth.store.schema import users

PW = "c0rrect horse"


@pytest.fixture
def engine(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> Iterator[DecisionEngine]:
    s = sqlite_store
    h = fast_hasher
    s.add_user("alice", h.hash(PW), networks=[NetworkRule.parse("192.0.2.0/24", scope="user")])
    s.add_user_network("alice", NetworkRule.parse("any", "imap", scope="user"))
    s.add_user("bob", h.hash(PW), enabled=False, networks=[NetworkRule.parse("any", scope="user")])
    s.add_user("carol", None, networks=[NetworkRule.parse("any", scope="user")])
    s.add_user("dave", h.hash(PW))  # no networks at all
    s.add_user("erin", h.hash(PW), networks=[NetworkRule.parse("local", scope="user")])
    s.add_user("v6", h.hash(PW), networks=[NetworkRule.parse("2001:db8::/32", scope="user")])
    yield DecisionEngine(s, h)


TABLE = [
    # user, password, rip, service -> verdict, reason
    ("alice", PW, "192.0.2.9", "smtp", Verdict.OK, Reason.OK),
    ("ALICE", PW, "192.0.2.9", "smtp", Verdict.OK, Reason.OK),
    ("alice", PW, "::ffff:192.0.2.9", "smtp", Verdict.OK, Reason.OK),
    ("alice", PW, "198.51.100.1", "smtp", Verdict.FAIL, Reason.NETWORK),
    ("alice", PW, "::ffff:198.51.100.1", "smtp", Verdict.FAIL, Reason.NETWORK),
    ("alice", PW, "198.51.100.1", "imap", Verdict.OK, Reason.OK),
    ("alice", PW, None, "smtp", Verdict.FAIL, Reason.NETWORK),
    ("alice", PW, "not-an-ip", "smtp", Verdict.FAIL, Reason.NETWORK),
    ("alice", "wrong", "192.0.2.9", "smtp", Verdict.FAIL, Reason.BAD_PASSWORD),
    ("alice", "", "192.0.2.9", "smtp", Verdict.FAIL, Reason.EMPTY_PASSWORD),
    ("nobody", "", "192.0.2.9", "smtp", Verdict.FAIL, Reason.EMPTY_PASSWORD),
    ("nobody", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.UNKNOWN_USER),
    ("bad\tname", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.UNKNOWN_USER),
    ("", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.UNKNOWN_USER),
    ("bob", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.DISABLED),
    ("bob", "wrong", "192.0.2.9", "smtp", Verdict.FAIL, Reason.BAD_PASSWORD),
    ("carol", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.NO_PASSWORD),
    ("dave", PW, "192.0.2.9", "smtp", Verdict.FAIL, Reason.NO_NETWORK_RULES),
    ("erin", PW, None, "imap", Verdict.OK, Reason.OK),
    ("erin", PW, "127.0.0.1", "imap", Verdict.FAIL, Reason.NETWORK),
    ("v6", PW, "2001:db8::1", "smtp", Verdict.OK, Reason.OK),
    ("v6", PW, "fe80::1%eth0", "smtp", Verdict.FAIL, Reason.NETWORK),
    ("v6", PW, "2001:db8::1%eth0", "smtp", Verdict.OK, Reason.OK),
]


@pytest.mark.parametrize(("user", "pw", "rip", "svc", "verdict", "reason"), TABLE)
def test_verdict_table(
    engine: DecisionEngine,
    user: str,
    pw: str,
    rip: str | None,
    svc: str,
    verdict: Verdict,
    reason: Reason,
) -> None:
    d = engine.decide(Login.of(user, pw, rip, svc))
    assert (d.verdict, d.reason) == (verdict, reason)
    if verdict is Verdict.OK:
        assert d.user == user.lower() and d.matched


def test_global_network_admits_every_user(engine: DecisionEngine) -> None:
    assert (
        engine.decide(Login.of("dave", PW, "203.0.113.5", "smtp")).reason is Reason.NO_NETWORK_RULES
    )
    engine.store.add_global_network(NetworkRule.parse("203.0.113.0/24", "smtp"))  # type: ignore[attr-defined]
    d = engine.decide(Login.of("dave", PW, "203.0.113.5", "smtp"))
    assert d.verdict is Verdict.OK and "global network 203.0.113.0/24" in (d.matched or "")
    assert (
        engine.decide(Login.of("dave", PW, "203.0.113.5", "imap")).reason is Reason.NO_NETWORK_RULES
    )
    assert (
        engine.decide(Login.of("dave", "nope", "203.0.113.5", "smtp")).reason is Reason.BAD_PASSWORD
    )


def test_corrupt_hash_is_tempfail_never_ok(engine: DecisionEngine) -> None:
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(users.update().where(users.c.name == "alice").values(password_hash="{NOPE}x"))
    d = engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    assert d.verdict is Verdict.TEMPFAIL and d.reason is Reason.BACKEND_ERROR


def test_database_unreachable_is_tempfail(fast_hasher: PasswordHasher) -> None:
    store = SqlStore("postgresql+psycopg://nobody@127.0.0.1:9/none", connect_timeout=2)
    d = DecisionEngine(store, fast_hasher).decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    assert d.verdict is Verdict.TEMPFAIL and d.reason is Reason.BACKEND_ERROR
    store.close()


def test_database_tables_dropped_is_tempfail(engine: DecisionEngine) -> None:
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.text("DROP TABLE user_networks"))
    assert engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp")).verdict is Verdict.TEMPFAIL


def test_pam_user_without_pam_is_tempfail(engine: DecisionEngine) -> None:
    engine.store.add_user("pamuser", None, backend="pam", networks=[NetworkRule.parse("any")])  # type: ignore[attr-defined]
    assert engine.decide(Login.of("pamuser", PW, "192.0.2.9", "smtp")).verdict is Verdict.TEMPFAIL


def test_rehash_on_login(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> None:
    old = PasswordHasher("SHA512-CRYPT").hash(PW)
    sqlite_store.add_user("gina", old, networks=[NetworkRule.parse("any")])
    eng = DecisionEngine(sqlite_store, fast_hasher, rehash_on_login=True)
    assert eng.decide(Login.of("gina", "wrong", "192.0.2.1", "smtp")).verdict is Verdict.FAIL
    assert sqlite_store.get_user("gina").password_hash == old  # type: ignore[union-attr]
    assert eng.decide(Login.of("gina", PW, "192.0.2.1", "smtp")).verdict is Verdict.OK
    new = sqlite_store.get_user("gina").password_hash  # type: ignore[union-attr]
    assert new is not None and new.startswith("{ARGON2ID}")
    assert eng.decide(Login.of("gina", PW, "192.0.2.1", "smtp")).verdict is Verdict.OK


def test_one_log_line_per_decision_and_stolen_credentials_warning(
    engine: DecisionEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="saslnetauth"):
        engine.decide(Login.of("alice", PW, "203.0.113.9", "smtp"))
        engine.decide(Login.of("alice", "guess", "203.0.113.9", "smtp"))
        engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "saslnetauth.auth"]
    assert msgs == [
        (
            logging.WARNING,
            "auth fail: user=alice service=smtp rip=203.0.113.9 reason=network credentials_valid=yes",
        ),
        (logging.INFO, "auth fail: user=alice service=smtp rip=203.0.113.9 reason=bad_password"),
        (
            logging.INFO,
            'auth ok: user=alice service=smtp rip=192.0.2.9 rule="user network 192.0.2.0/24 (all services)"',
        ),
    ]
    assert PW not in caplog.text and "guess" not in caplog.text


def test_untrusted_text_is_cleaned_in_logs(
    engine: DecisionEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="saslnetauth"):
        engine.decide(Login.of("mallory\nauth ok: user=alice", PW, "1.2.3.4\nx", "smtp"))
    lines = [r.getMessage() for r in caplog.records if r.name == "saslnetauth.auth"]
    assert len(lines) == 1 and "\n" not in lines[0]


class _CountingHasher(PasswordHasher):
    """Counts verifications (real and dummy) to prove none ran."""

    calls = 0

    def verify(self, password: str | bytes, stored: object) -> bool:  # type: ignore[override]
        type(self).calls += 1
        return super().verify(password, stored)  # type: ignore[arg-type]

    def dummy_verify(self, password: str | bytes) -> None:
        type(self).calls += 1
        super().dummy_verify(password)


def test_empty_password_refused_before_any_verification(sqlite_store: SqlStore) -> None:
    """Issue 11 item 4: a {PLAIN} row with an empty value (as a script may write it)
    must not let an empty password in, and an empty password costs no hash."""
    hasher = _CountingHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)
    sqlite_store.add_user("pete", hasher.hash(PW), networks=[NetworkRule.parse("any")])
    with sqlite_store.engine.begin() as conn:
        conn.execute(users.update().where(users.c.name == "pete").values(password_hash="{PLAIN}"))
    eng = DecisionEngine(sqlite_store, hasher)
    _CountingHasher.calls = 0
    for user in ("pete", "nobody", "PETE"):
        d = eng.decide(Login.of(user, "", "192.0.2.9", "smtp"))
        assert (d.verdict, d.reason) == (Verdict.FAIL, Reason.EMPTY_PASSWORD)
        assert d.verify_seconds == 0.0
    assert _CountingHasher.calls == 0
    # any other password against the empty {PLAIN} row: an unusable hash, never OK
    d = eng.decide(Login.of("pete", "x", "192.0.2.9", "smtp"))
    assert (d.verdict, d.reason) == (Verdict.TEMPFAIL, Reason.BACKEND_ERROR)


@pytest.mark.parametrize(
    ("rip", "enabled", "want"),
    [("203.0.113.9", True, Reason.NETWORK), ("192.0.2.1", False, Reason.DISABLED)],
)
def test_rehash_never_for_a_correct_password_that_fails(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher, rip: str, enabled: bool, want: Reason
) -> None:
    """Issue 11 item 6: a correct password from a forbidden network (or for a
    disabled user) must not change the stored hash."""
    old = PasswordHasher("SHA512-CRYPT").hash(PW)
    sqlite_store.add_user(
        "gina", old, enabled=enabled, networks=[NetworkRule.parse("192.0.2.0/24")]
    )
    eng = DecisionEngine(sqlite_store, fast_hasher, rehash_on_login=True)
    d = eng.decide(Login.of("gina", PW, rip, "smtp"))
    assert (d.verdict, d.reason, d.credentials_valid) == (Verdict.FAIL, want, True)
    assert sqlite_store.get_user("gina").password_hash == old  # type: ignore[union-attr]


def test_rehash_waits_for_the_reply(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> None:
    old = PasswordHasher("SHA512-CRYPT").hash(PW)
    sqlite_store.add_user("gina", old, networks=[NetworkRule.parse("any")])
    eng = DecisionEngine(sqlite_store, fast_hasher, rehash_on_login=True)
    after: list[Callable[[], None]] = []
    assert eng.decide(Login.of("gina", PW, "192.0.2.1", "smtp"), after_reply=after).ok
    assert len(after) == 1
    assert sqlite_store.get_user("gina").password_hash == old  # type: ignore[union-attr]
    after[0]()
    new = sqlite_store.get_user("gina").password_hash  # type: ignore[union-attr]
    assert new is not None and new.startswith("{ARGON2ID}")
    after.clear()
    assert eng.decide(Login.of("gina", PW, "192.0.2.1", "smtp"), after_reply=after).ok
    assert after == []  # already in the default scheme


def test_unknown_users_network_ok_mirrors_a_user_without_networks(
    engine: DecisionEngine,
) -> None:
    """Issue 11 item 7: the user brake looks at network_ok; an unknown name must
    get it exactly as an existing user without networks of their own would."""
    outside = engine.decide(Login.of("nobody", PW, "203.0.113.5", "smtp"))
    dave = engine.decide(Login.of("dave", "wrong", "203.0.113.5", "smtp"))
    assert outside.network_ok is False and dave.network_ok is False
    engine.store.add_global_network(NetworkRule.parse("203.0.113.0/24"))  # type: ignore[attr-defined]
    inside = engine.decide(Login.of("nobody", PW, "203.0.113.5", "smtp"))
    dave = engine.decide(Login.of("dave", "wrong", "203.0.113.5", "smtp"))
    assert inside.network_ok is True and dave.network_ok is True
    assert inside.verify_seconds > 0  # the dummy verification was timed


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_no_password_in_engine_logs_plain_or_base64(
    engine: DecisionEngine, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    secret = "Qq7-engine-secret"
    engine.store.update_hash("alice", engine.hasher.hash(secret))
    with caplog.at_level(level, logger="saslnetauth"):
        for user, rip in (("alice", "192.0.2.9"), ("alice", "203.0.113.9"), ("nobody", None)):
            engine.decide(Login.of(user, secret, rip, "smtp"))
            engine.decide(Login.of(user, secret + "x", rip, "smtp"))
    assert "auth ok: user=alice" in caplog.text
    for form in _secret_forms("alice", secret) + _secret_forms("nobody", secret):
        assert form not in caplog.text, form


def _secret_forms(user: str, secret: str) -> list[str]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [
        secret,
        b64(secret),
        b64(secret).rstrip("="),
        b64(f"\0{user}\0{secret}"),
        b64(f"\0{user}\0{secret}x"),
    ]


def test_suspended_credential_fails_like_a_wrong_password(
    engine: DecisionEngine, sqlite_store: SqlStore
) -> None:
    """docs/sending.md: the right password of a suspended credential is a FAIL."""
    assert engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp")).admitted == "own"
    assert sqlite_store.suspend("alice", None)
    assert not sqlite_store.suspend("alice", None)  # already
    d = engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp"))
    assert (d.verdict, d.reason, d.credentials_valid) == (Verdict.FAIL, Reason.SUSPENDED, True)
    assert (
        engine.decide(Login.of("alice", "wrong", "192.0.2.9", "smtp")).reason is Reason.BAD_PASSWORD
    )
    assert sqlite_store.unsuspend("alice", None)
    assert engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp")).ok


def test_admitted_says_own_or_outside(engine: DecisionEngine, sqlite_store: SqlStore) -> None:
    sqlite_store.add_global_network(NetworkRule.parse("198.51.100.0/24"))
    assert engine.decide(Login.of("alice", PW, "198.51.100.1", "smtp")).admitted == "outside"
    assert engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp")).admitted == "own"
    assert engine.decide(Login.of("alice", "wrong", "192.0.2.9", "smtp")).admitted is None


def test_suspended_app_password_fails_and_the_main_password_works(
    engine: DecisionEngine, sqlite_store: SqlStore
) -> None:
    from saslnetauth.credentials.apptokens import new_token

    token = sqlite_store.add_app_password(
        "alice", "phone", new_token, networks=[NetworkRule.parse("any", scope="app")]
    )
    d = engine.decide(Login.of("alice", token, "198.51.100.1", "smtp"))
    assert (d.ok, d.credential, d.admitted) == (True, "phone", "outside")
    assert sqlite_store.suspend("alice", "phone")
    d = engine.decide(Login.of("alice", token, "198.51.100.1", "smtp"))
    assert (d.reason, d.credential, d.credentials_valid) == (Reason.SUSPENDED, "phone", True)
    assert engine.decide(Login.of("alice", PW, "192.0.2.9", "smtp")).ok
