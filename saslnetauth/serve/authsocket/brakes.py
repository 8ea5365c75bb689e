"""The responder's brute-force brakes around one login (docs/design.md, point 9):
the client's penalty (:class:`~saslnetauth.serve.decide.penalty.PenaltyBox` per
client network), the user's penalty for failures from outside the user's
networks (``[serve] user_penalty``), and the memory of recent wrong passwords
(:mod:`saslnetauth.serve.decide.repeats`): a repeat grows neither."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import WRONG_PASSWORD, Decision, Verdict
from saslnetauth.serve.decide.penalty import PenaltyBox
from saslnetauth.serve.decide.repeats import RepeatMemory, Repeats
from saslnetauth.settings import ServeConfig

__all__ = ["MAX_USER_KEY", "Brakes", "penalty_settings"]

#: Characters of a user name the repeat memory keys on.
MAX_USER_KEY = 256


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

    def retune(self, settings: ServeConfig) -> None:
        self.ip.retune(**penalty_settings(settings))
        self.user.retune(**penalty_settings(settings))
        self.repeats.retune(settings.penalty_max_entries)

    def seen(self, key: Hashable, login: Login) -> Repeats:
        """Whether the login's password repeats a recent wrong one (of this client, of
        this user), at its arrival."""
        return self.repeats.check(key, login.user[:MAX_USER_KEY], login.password, login.arrival)

    def after(
        self,
        decision: Decision,
        login: Login,
        key: Hashable,
        seen: Repeats,
        now: float,
        *,
        user_penalty: bool,
    ) -> float:
        """Count the decision against the client (and the user); the seconds the user's
        penalty adds to this failure's deadline."""
        if decision.verdict is Verdict.OK:
            # The user brake is not cleared: it only counts failures from outside the
            # user's networks, which the real user's success says nothing about.
            self.ip.record_success(key)
            return 0.0
        if decision.verdict is not Verdict.FAIL:
            return 0.0
        extra = 0.0
        wrong = decision.reason in WRONG_PASSWORD
        if not (wrong and seen.client):
            self.ip.record_failure(key, now)
        # network_ok is also set for unknown users (the global networks), so the
        # user brake cannot tell existing names from others
        braked = user_penalty and decision.network_ok is False
        if braked:
            extra = self.user.delay(decision.user, now)
            if not (wrong and seen.user):
                self.user.record_failure(decision.user, now)
        if wrong:
            user_key = login.user[:MAX_USER_KEY]
            self.repeats.remember(key, user_key, seen, now, for_user=braked)
        return extra
