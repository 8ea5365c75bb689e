"""The shared brake's pure parts (what one decision does to the brakes, the keys in the
store, the delay of a count) and its fallback when the store does not answer: a real
redis-py client aimed at a port nobody listens on (refused at once)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.authsocket.brakes import brake_step
from saslnetauth.serve.decide.penalty import PenaltyBox
from saslnetauth.serve.decide.repeats import Repeats
from saslnetauth.serve.decide.sharedbrake import open_shared_brake
from saslnetauth.serve.decide.sharedpenalty import MAX_NAME, Step, client_name, user_name
from tests.support.serverproc import free_port

KEY = (4, 0x7F000002)
FRESH = Repeats(b"", client=False, user=False)


def fail(reason: Reason = Reason.BAD_PASSWORD, network_ok: bool | None = True) -> Decision:
    return Decision(Verdict.FAIL, reason, "alice", network_ok=network_ok)


def test_a_success_clears_its_client_and_never_the_user() -> None:
    ok = Decision(Verdict.OK, Reason.OK, "alice", network_ok=True)
    assert brake_step(ok, KEY, FRESH, user_penalty=True) == Step(client=KEY, clear=True)


def test_a_failure_counts_against_its_client_and_a_repeat_does_not() -> None:
    assert brake_step(fail(), KEY, FRESH, user_penalty=True) == Step(client=KEY)
    repeat = Repeats(b"", client=True, user=True)
    assert brake_step(fail(), KEY, repeat, user_penalty=True) == Step()
    # a network denial is not a wrong password: it counts even when it repeats
    denied = fail(Reason.NETWORK, network_ok=False)
    step = brake_step(denied, KEY, repeat, user_penalty=True)
    assert step == Step(client=KEY, user="alice", user_fail=True)


def test_the_user_is_braked_only_outside_its_networks_and_when_asked() -> None:
    outside = fail(network_ok=False)
    assert brake_step(outside, KEY, FRESH, user_penalty=True).user_fail
    assert brake_step(outside, KEY, FRESH, user_penalty=False).user is None
    assert brake_step(fail(network_ok=True), KEY, FRESH, user_penalty=True).user is None
    seen_by_user = Repeats(b"", client=False, user=True)
    step = brake_step(outside, KEY, seen_by_user, user_penalty=True)
    assert step == Step(client=KEY, user="alice", user_fail=False)  # read, not counted


def test_a_temporary_failure_touches_nothing() -> None:
    tempfail = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, "alice")
    assert brake_step(tempfail, KEY, FRESH, user_penalty=True).empty


def test_keys() -> None:
    assert client_name("p:", KEY) == "p:bf:c:4:7f000002"
    assert client_name("p:", (6, 0x20010DB8)) == "p:bf:c:6:20010db8"
    assert user_name("p:", "alice") == "p:bf:u:alice"
    assert len(user_name("p:", "x" * 10_000)) == len("p:bf:u:") + MAX_NAME


@pytest.mark.parametrize("failures", range(8))
def test_delay_of_a_count_is_the_box_delay(failures: int) -> None:
    box = PenaltyBox(base=0.5, cap=4.0, free_failures=2)
    for _ in range(failures):
        box.record_failure(KEY, 0.0)
    assert box.delay_for(failures) == box.delay(KEY, 0.0)
    assert PenaltyBox(cap=0.0).delay_for(failures) == 0.0


def test_a_store_that_does_not_answer_falls_back_once(caplog: pytest.LogCaptureFixture) -> None:
    box = PenaltyBox(base=0.5, cap=4.0, free_failures=2)
    for _ in range(3):
        box.record_failure(KEY, 0.0)

    async def run() -> tuple[list[tuple[float, bool]], list[float], bool, int]:
        brake = open_shared_brake(f"redis://127.0.0.1:{free_port()}/0", "p:", 0.5, 3600)
        waits = [await brake.client_wait(KEY, box, 0.0) for _ in range(3)]
        step = Step(client=KEY, user="alice", user_fail=True)
        extras = [await brake.settle(step, box, 0.25) for _ in range(2)]
        up, fallbacks = brake.up, brake.fallbacks
        await brake.close()
        return waits, extras, up, fallbacks

    with caplog.at_level(logging.INFO, logger="saslnetauth.serve.brake"):
        waits, extras, up, fallbacks = asyncio.run(run())
    assert waits == [(box.delay(KEY, 0.0), False)] * 3  # this host's count still brakes
    assert extras == [0.25, 0.25]
    assert (up, fallbacks) == (False, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("shared brake unavailable" in line for line in lines) == 1
