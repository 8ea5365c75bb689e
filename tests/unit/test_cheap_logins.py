"""Cheap logins decided from the classification's one lookup (saslnetauth.policy.cheap,
DecisionEngine.decide_if_cheap; the server's side is tests/transcript/test_cheap_logins.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.cheap import may_be_cheap
from saslnetauth.policy.classification import Classified
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.store import SqlStore
from tests.support.apppasswords import add_app_password

PW = "cheap pass word"
HOME = "192.0.2.9"
OUTSIDE = "198.51.100.1"


@pytest.fixture
def engine(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> Iterator[DecisionEngine]:
    s = sqlite_store
    net = [NetworkRule.parse("192.0.2.0/24", scope="user")]
    s.add_user("plain", "{PLAIN}" + PW, networks=net)
    s.add_user("slow", fast_hasher.hash(PW), networks=net)
    yield DecisionEngine(s, fast_hasher)


def _decide(
    engine: DecisionEngine, user: str, pw: str, rip: str, retired_by: float = 0.0
) -> Decision | Classified:
    return engine.decide_if_cheap(Login.of(user, pw, rip, "smtp", retired_by=retired_by), [])


def test_plain_from_its_network_is_decided_with_one_lookup(
    engine: DecisionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    get_user = engine.store.get_user

    def counted(name: str) -> UserRecord | None:
        reads.append(name)
        return get_user(name)

    monkeypatch.setattr(engine.store, "get_user", counted)
    ok = _decide(engine, "plain", PW, HOME)
    assert isinstance(ok, Decision) and (ok.verdict, ok.reason) == (Verdict.OK, Reason.OK)
    assert reads == ["plain"]  # the classification's read, no second one
    wrong = _decide(engine, "plain", "nope", HOME)
    assert isinstance(wrong, Decision) and wrong.reason is Reason.BAD_PASSWORD
    empty = _decide(engine, "plain", "", HOME)
    assert isinstance(empty, Decision) and empty.reason is Reason.EMPTY_PASSWORD


@pytest.mark.parametrize(
    ("user", "rip", "could"),
    [("slow", HOME, True), ("plain", OUTSIDE, False), ("ghost", HOME, False)],
    ids=["slow-hash", "cannot-succeed", "unknown-name"],  # no global networks here
)
def test_the_rest_is_handed_back_classified(
    engine: DecisionEngine, user: str, rip: str, could: bool
) -> None:
    got = _decide(engine, user, PW, rip)
    assert isinstance(got, Classified)
    assert got.could_succeed is could


def test_an_app_password_is_cheap_its_slow_main_password_is_not(
    engine: DecisionEngine, sqlite_store: SqlStore
) -> None:
    token = add_app_password(sqlite_store, "slow", "phone", "192.0.2.0/24")
    got = _decide(engine, "slow", token, HOME)
    assert isinstance(got, Decision) and got.ok and got.credential == "phone"
    assert isinstance(_decide(engine, "slow", PW, HOME), Classified)


def test_slow_work_after_a_cheap_compare_goes_to_the_workers(engine: DecisionEngine) -> None:
    """A wrong password that may be tried against retired (slow) hashes, and an OK that
    would be rehashed, are not cheap; a right one without either still is."""
    engine.retired_days = 30
    assert isinstance(_decide(engine, "plain", "nope", HOME, retired_by=1e12), Classified)
    assert isinstance(_decide(engine, "plain", PW, HOME, retired_by=1e12), Decision)
    assert isinstance(_decide(engine, "plain", "nope", HOME), Decision)  # no retired check
    engine.rehash_on_login = True
    assert isinstance(_decide(engine, "plain", PW, HOME), Classified)


def test_may_be_cheap_reads_only_the_row() -> None:
    plain = UserRecord(1, "a", "{CLEARTEXT}x", True)
    assert may_be_cheap(plain, Login.of("a", "x", HOME, "smtp"))
    assert not may_be_cheap(None, Login.of("a", "x", HOME, "smtp"))
    slow = UserRecord(2, "b", "{SHA512-CRYPT}$6$salt$hash", True)
    assert not may_be_cheap(slow, Login.of("b", "x", HOME, "smtp"))
    pam = UserRecord(3, "c", None, True, backend="pam")
    assert not may_be_cheap(pam, Login.of("c", "x", HOME, "smtp"))
