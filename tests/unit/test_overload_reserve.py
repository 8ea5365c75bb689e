"""The overload reserve's rules (saslnetauth/serve/authsocket/brakes.py): which client
networks may be decided past ``max_pending``, how many places each may take."""

from __future__ import annotations

import time

from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.authsocket.brakes import GOOD_SECONDS, Brakes, overload_reserve
from saslnetauth.serve.decide.penalty import client_bucket
from saslnetauth.serve.decide.repeats import Repeats
from saslnetauth.settings import ServeConfig

HOME = client_bucket(Login.of("alice", b"pw", "192.0.2.5", "smtp").address)
FRESH = client_bucket(Login.of("alice", b"pw", "198.51.100.9", "smtp").address)


def _ok(brakes: Brakes, key: tuple[int, int] | None, at: float) -> None:
    login = Login.of("alice", b"pw", "192.0.2.5", "smtp")
    decision = Decision(Verdict.OK, Reason.OK, "alice", credentials_valid=True)
    brakes.after(decision, login, key, Repeats(b"", False, False), at, user_penalty=False)


def test_only_networks_with_a_recent_success_and_each_its_share() -> None:
    brakes = Brakes(ServeConfig(penalty_max_entries=100))
    limit = 1024
    reserve = overload_reserve(limit)
    assert reserve == 256
    assert not brakes.take_reserve(HOME, limit, limit)  # no success yet
    _ok(brakes, HOME, time.monotonic())
    assert not brakes.take_reserve(FRESH, limit, limit)
    assert not brakes.take_reserve(None, limit, limit)
    taken = 0
    while brakes.take_reserve(HOME, limit + taken, limit):
        taken += 1
    assert taken == reserve // 16  # one network cannot take the whole reserve
    brakes.release_reserve(HOME)
    assert brakes.take_reserve(HOME, limit, limit)
    assert not brakes.take_reserve(HOME, limit + reserve, limit)  # the reserve is full


def test_a_success_is_good_for_an_hour_and_the_memory_is_bounded() -> None:
    brakes = Brakes(ServeConfig(penalty_max_entries=3))
    now = time.monotonic()
    _ok(brakes, HOME, now - GOOD_SECONDS - 1)
    assert not brakes.recently_good(HOME, now)
    _ok(brakes, HOME, now)
    assert brakes.recently_good(HOME, now)
    for i in range(4):
        _ok(brakes, (4, i), now)
    assert len(brakes.good) == 3 and not brakes.recently_good(HOME, now)  # oldest out
