"""Expiring grants (issue 16, part 1) in the engine and the store, with a clock the tests
control: user and global networks before and after their end, the global cache across
an expiry, rows written by admin scripts on SQLite, PostgreSQL and MariaDB (an expiry
that is not a time makes the row invalid), renewing a grant."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore

PW = "c0rrect horse"


class Clock:
    """UNIX time that moves only when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))  # whole seconds, as the CLI writes


@pytest.fixture
def engine(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher, clock: Clock
) -> Iterator[DecisionEngine]:
    s = sqlite_store
    s.global_rules_cache.cache_seconds = 3600.0  # the copy is never re-checked here
    s.add_user("alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("192.0.2.0/24")])
    s.add_user_network(
        "alice", NetworkRule.parse("198.51.100.0/24", scope="user", expires=clock.now + 8 * 3600)
    )
    s.add_user("bob", fast_hasher.hash(PW))
    yield DecisionEngine(s, fast_hasher, clock=clock)


def test_user_grant_admits_until_it_expires(engine: DecisionEngine, clock: Clock) -> None:
    start = clock.now
    d = engine.decide(Login.of("alice", PW, "198.51.100.7", "smtp"), quiet=True)
    assert d.verdict is Verdict.OK
    assert d.expires == start + 8 * 3600
    assert d.matched is not None and ", until 20" in d.matched
    clock.now = start + 8 * 3600 - 1
    assert engine.decide(Login.of("alice", PW, "198.51.100.7", "smtp"), quiet=True).ok
    clock.now = start + 8 * 3600 + 1
    d = engine.decide(Login.of("alice", PW, "198.51.100.7", "smtp"), quiet=True)
    assert (d.verdict, d.reason, d.credentials_valid) == (Verdict.FAIL, Reason.NETWORK, True)
    # the permanent network is untouched
    ok = engine.decide(Login.of("alice", PW, "192.0.2.1", "smtp"), quiet=True)
    assert ok.ok and ok.expires is None


def test_expired_only_grant_is_no_network_at_all(
    engine: DecisionEngine, sqlite_store: SqlStore, clock: Clock
) -> None:
    sqlite_store.add_user_network(
        "bob", NetworkRule.parse("any", scope="user", expires=clock.now + 60)
    )
    assert engine.decide(Login.of("bob", PW, "203.0.113.1", "imap"), quiet=True).ok
    clock.now += 61
    d = engine.decide(Login.of("bob", PW, "203.0.113.1", "imap"), quiet=True)
    assert (d.verdict, d.reason) == (Verdict.FAIL, Reason.NO_NETWORK_RULES)
    c = engine.triage(Login.of("bob", b"", "203.0.113.1", "imap"))
    assert not c.could_succeed


def test_global_grant_expires_inside_the_cached_copy(
    engine: DecisionEngine, sqlite_store: SqlStore, clock: Clock
) -> None:
    """Time passing changes no version: the copy stays, and must not serve the row."""
    sqlite_store.add_global_network(
        NetworkRule.parse("203.0.113.0/24", ["imap"], expires=clock.now + 600)
    )
    assert engine.decide(Login.of("bob", PW, "203.0.113.9", "imap"), quiet=True).ok
    reloads = sqlite_store.global_rules_cache.reloads
    clock.now += 600
    d = engine.decide(Login.of("bob", PW, "203.0.113.9", "imap"), quiet=True)
    assert (d.verdict, d.reason) == (Verdict.FAIL, Reason.NO_NETWORK_RULES)
    assert sqlite_store.global_rules_cache.reloads == reloads  # the same copy, filtered
    # a lookup the server reuses (Classifier) is matched at the time of its use
    lookup = engine.triage(Login.of("bob", b"", "203.0.113.9", "imap")).lookup
    assert lookup is not None
    clock.now -= 1
    assert engine.match_cached(lookup, Login.of("bob", b"", "203.0.113.9", "imap")).could_succeed
    clock.now += 1
    assert not engine.match_cached(
        lookup, Login.of("bob", b"", "203.0.113.9", "imap")
    ).could_succeed


# -- rows written by admin scripts, on every database -------------------------------------
