"""The responder's brute-force brakes around one login (docs/design.md, point 9):
the client's penalty (:class:`~saslnetauth.serve.decide.penalty.PenaltyBox` per
client network), the user's penalty for failures from outside the user's
networks (``[serve] user_penalty``), and the memory of recent wrong passwords
(:mod:`saslnetauth.serve.decide.repeats`): a repeat grows neither. With ``[state]
url`` the counts of every host sharing the store are used as well
(:mod:`saslnetauth.serve.decide.sharedbrake`); the repeat memory stays this host's."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import WRONG_PASSWORD, Decision, Verdict
from saslnetauth.serve.decide.penalty import PenaltyBox
from saslnetauth.serve.decide.repeats import RepeatMemory, Repeats
from saslnetauth.serve.decide.sharedbrake import SharedBrake
from saslnetauth.serve.decide.sharedpenalty import Step
from saslnetauth.settings import ServeConfig

__all__ = [
    "GOOD_SECONDS",
    "MAX_USER_KEY",
    "Brakes",
    "brake_step",
    "overload_reserve",
    "penalty_settings",
]

#: Characters of a user name the repeat memory keys on.
MAX_USER_KEY = 256
#: Seconds a client network stays "good" after a successful login from it.
GOOD_SECONDS = 3600.0


def penalty_settings(settings: ServeConfig) -> dict[str, Any]:
    return {
        "base": settings.penalty_base,
        "cap": settings.penalty_max,
        "free_failures": settings.penalty_free_failures,
        "max_entries": settings.penalty_max_entries,
    }


class Brakes:
    """The penalty boxes and the repeat memory of one responder (a reload retunes
    them and keeps what they counted)."""

    def __init__(self, settings: ServeConfig) -> None:
        self.ip = PenaltyBox(**penalty_settings(settings))
        self.user = PenaltyBox(**penalty_settings(settings))
        #: Recent wrong passwords (keyed digests): a repeat does not grow the brakes.
        self.repeats = RepeatMemory(max_entries=settings.penalty_max_entries)
        #: Every host's counts in Redis or Valkey (``[state] url``), None: this host's.
        self.shared: SharedBrake | None = None
        #: Client networks with a successful login in the last GOOD_SECONDS -> when
        #: (oldest first, at most penalty_max_entries): they may use the overload
        #: reserve (AuthServer._run_engine), which fresh addresses cannot.
        self.good: dict[tuple[int, int], float] = {}
        self._max_good = settings.penalty_max_entries
        self._reserved: dict[tuple[int, int], int] = {}  # reserve places by network

    def retune(self, settings: ServeConfig) -> None:
        self.ip.retune(**penalty_settings(settings))
        self.user.retune(**penalty_settings(settings))
        self.repeats.retune(settings.penalty_max_entries)
        self._max_good = settings.penalty_max_entries

    def recently_good(self, key: tuple[int, int] | None, now: float) -> bool:
        """Whether the client network ``key`` had a successful login within
        :data:`GOOD_SECONDS` (on this host)."""
        when = self.good.get(key) if key is not None else None
        return when is not None and now - when < GOOD_SECONDS

    def take_reserve(self, key: tuple[int, int] | None, pending: int, max_pending: int) -> bool:
        """A place for a login from ``key`` although ``pending`` logins are at
        ``max_pending`` or past it: when its client network had a recent success,
        fewer than :func:`overload_reserve` places past it are taken, and fewer than
        a sixteenth of them (at least one) by this network. A flood of guesses from
        fresh addresses can take every place but these; :meth:`release_reserve`
        gives it back."""
        reserve = overload_reserve(max_pending)
        if key is None or pending >= max_pending + reserve:
            return False
        if self._reserved.get(key, 0) >= max(1, reserve // 16):
            return False
        if not self.recently_good(key, time.monotonic()):
            return False
        self._reserved[key] = self._reserved.get(key, 0) + 1
        return True

    def release_reserve(self, key: tuple[int, int] | None) -> None:
        if key is None:
            return
        left = self._reserved.get(key, 0) - 1
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    async def client_wait(self, key: tuple[int, int] | None, now: float) -> tuple[float, bool]:
        """The seconds a login from ``key`` waits before it is decided, and whether the
        shared store counted no failure of it (a success then writes nothing there)."""
        if self.shared is None or key is None:
            return self.ip.delay(key, now), True
        return await self.shared.client_wait(key, self.ip, now)

    def seen(self, key: Hashable, login: Login) -> Repeats:
        """Whether the login's password repeats a recent wrong one (of this client, of
        this user), at its arrival."""
        return self.repeats.check(key, login.user[:MAX_USER_KEY], login.password, login.arrival)

    def after(
        self,
        decision: Decision,
        login: Login,
        key: tuple[int, int] | None,
        seen: Repeats,
        now: float,
        *,
        user_penalty: bool,
    ) -> float:
        """Count the decision against the client (and the user); the seconds the user's
        penalty adds to this failure's deadline."""
        return self._apply(
            brake_step(decision, key, seen, user_penalty=user_penalty),
            decision,
            login,
            key,
            seen,
            now,
        )

    async def after_shared(
        self,
        decision: Decision,
        login: Login,
        key: tuple[int, int] | None,
        seen: Repeats,
        now: float,
        *,
        user_penalty: bool,
        clean: bool = False,
    ) -> float:
        """:meth:`after`, and the same step in the shared store (``[state] url``);
        ``clean``: the store counted no failure of this client when it was read."""
        step = brake_step(decision, key, seen, user_penalty=user_penalty)
        extra = self._apply(step, decision, login, key, seen, now)
        if self.shared is None or (step.clear and clean):
            return extra
        return await self.shared.settle(step, self.user, extra)

    def _apply(
        self,
        step: Step,
        decision: Decision,
        login: Login,
        key: tuple[int, int] | None,
        seen: Repeats,
        now: float,
    ) -> float:
        if step.clear:
            self.ip.record_success(key)
            if key is not None:
                self.good.pop(key, None)
                self.good[key] = now
                while len(self.good) > self._max_good:
                    del self.good[next(iter(self.good))]
            return 0.0
        if step.client is not None:
            self.ip.record_failure(step.client, now)
        extra = 0.0
        if step.user is not None:
            extra = self.user.delay(step.user, now)
            if step.user_fail:
                self.user.record_failure(step.user, now)
        if decision.verdict is Verdict.FAIL and decision.reason in WRONG_PASSWORD:
            user_key = login.user[:MAX_USER_KEY]
            self.repeats.remember(key, user_key, seen, now, for_user=step.user is not None)
        return extra


def overload_reserve(max_pending: int) -> int:
    """Places past ``[serve] max_pending`` kept for clients with a recent success."""
    return max(1, max_pending // 4)


def brake_step(
    decision: Decision, key: tuple[int, int] | None, seen: Repeats, *, user_penalty: bool
) -> Step:
    """What ``decision`` does to the brakes (pure): a success clears its client, a
    failure counts against it unless it repeats a recent wrong password, a failure
    from outside the user's networks also against the user (read first: it lengthens
    this failure)."""
    if decision.verdict is Verdict.OK:
        # The user brake is not cleared: it only counts failures from outside the
        # user's networks, which the real user's success says nothing about.
        return Step(client=key, clear=True)
    if decision.verdict is not Verdict.FAIL:
        return Step()
    wrong = decision.reason in WRONG_PASSWORD
    # network_ok is also set for unknown users (the global networks), so the
    # user brake cannot tell existing names from others
    braked = user_penalty and decision.network_ok is False
    return Step(
        client=None if wrong and seen.client else key,
        user=decision.user if braked else None,
        user_fail=braked and not (wrong and seen.user),
    )
