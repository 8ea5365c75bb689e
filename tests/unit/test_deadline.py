"""The fixed failure deadline (issue 11 item 5): one rule for every frontend."""

from __future__ import annotations

import asyncio
import time

import pytest

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.deadline import (
    MARGIN,
    MAX_ANSWER,
    FailureDeadline,
    calibrate,
    sleep_until,
    wait_until,
)


def test_deadline_is_measured_from_arrival_not_after_the_work() -> None:
    d = FailureDeadline(2.0, measured=0.1)
    # the failure delay covers the slowest verification: arrival + 2 s, whatever ran
    assert d.at(100.0) == pytest.approx(102.0)
    # penalties add to it; the whole wait is capped below the clients' timeout
    assert d.at(100.0, wait=1.0, extra=0.5) == pytest.approx(103.5)
    assert d.at(100.0, wait=4.0, extra=4.0) == pytest.approx(100.0 + MAX_ANSWER)


def test_floor_covers_the_slowest_scheme_even_without_failure_delay() -> None:
    d = FailureDeadline(0.0, measured=0.2)
    assert d.base(0.0) >= 0.2 * MARGIN
    assert d.at(10.0) >= 10.0 + 0.2 * MARGIN


def test_a_slower_verification_raises_the_floor_boundedly_and_decays() -> None:
    d = FailureDeadline(0.0, measured=0.1)
    before = d.floor(0.0)
    d.observe(0.3, now=0.0)
    assert d.floor(0.0) == pytest.approx(0.3 * MARGIN, rel=0.05)
    assert d.floor(0.0) > before
    d.observe(100.0, now=0.0)  # a stalled machine: counted at most 4 x measured
    assert d.floor(0.0) <= 0.4 * MARGIN + 0.01
    assert d.floor(3600.0 * 10) == pytest.approx(before)  # decays back
    fresh = FailureDeadline(0.0, measured=0.1)
    fresh.carry_over(d)  # a reload keeps what was seen
    assert fresh.floor(0.0) == pytest.approx(d.floor(0.0))


def test_calibrate_measures_the_slowest_of_the_schemes() -> None:
    hasher = PasswordHasher("ARGON2ID", argon2_memory_kib=8192, argon2_time_cost=2)
    slow = calibrate(hasher, ("ARGON2ID",))
    fast = calibrate(hasher, ("SHA512-CRYPT",))
    both = calibrate(hasher, ("SHA512-CRYPT", "ARGON2ID"))
    assert slow > fast > 0
    assert both >= fast and both > 0.5 * slow


def test_sleepers_wait_until_the_deadline() -> None:
    target = time.monotonic() + 0.05
    sleep_until(target)
    assert time.monotonic() >= target
    target = time.monotonic() + 0.05
    asyncio.run(wait_until(target))
    assert time.monotonic() >= target
    sleep_until(time.monotonic() - 5)  # past: returns at once
