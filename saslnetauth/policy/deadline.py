"""When a failed login may be answered: one fixed deadline from the request's arrival.

Every frontend (the responder, the checkpassword fallback, and any later
one) answers a FAIL or TEMPFAIL at

    arrival + client penalty wait + max(failure_delay, floor) + user penalty

and never earlier, whatever the cause (unknown user, wrong or empty
password, disabled user, forbidden network, malformed exchange) and
whatever the stored hash's scheme. ``floor`` is the slowest password
verification this installation does: measured at start for every scheme
new hashes can be made with, at the configured costs (:func:`calibrate`),
times :data:`MARGIN`, and raised by slower verifications seen later
(:meth:`FailureDeadline.observe`, e.g. an imported bcrypt hash of a higher
cost), which then decay back towards the measured value. So an unknown
user (a dummy ARGON2ID verification) and a user with a SHA512-CRYPT hash
fail at the same moment even with ``failure_delay = 0``.

No reply waits past :data:`MAX_ANSWER` seconds after arrival: Postfix and
``saslnetauth-checkpassword`` give up after 10 s (see
:func:`saslnetauth.config.validate`). Pure except for the clock and the
timing of :func:`calibrate`; stdlib only.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saslnetauth.credentials.passwords import PasswordHasher

__all__ = [
    "MARGIN",
    "MAX_ANSWER",
    "FailureDeadline",
    "calibrate",
    "sleep_until",
    "wait_until",
]

#: Seconds after arrival by which every reply leaves (Postfix waits 10).
MAX_ANSWER = 9.5
#: The measured slowest verification is multiplied by this (load, noise) ...
MARGIN = 1.5
#: ... and this many seconds are added.
MARGIN_ADD = 0.005
#: Most seconds an observed verification may raise the floor to.
MAX_FLOOR = 5.0
#: Half-life (seconds) of an observed slow verification's effect on the floor: long,
#: so that the floor settles at the slowest verifications of the last hours instead of
#: following every change of load (measured with benchmarks/oracle.py: a half-life of
#: 10 minutes on a busy machine let the floor wander by +-30% within a run).
DECAY_HALF_LIFE = 3600.0
#: An observation counts for at most this many times the measured slowest
#: verification (a stalled machine must not delay every failure for long).
OBSERVE_CAP = 4.0
#: Schemes whose verification time :func:`calibrate` measures (those new hashes use).
CALIBRATED_SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512")


def calibrate(hasher: PasswordHasher, schemes: tuple[str, ...] = CALIBRATED_SCHEMES) -> float:
    """Seconds of the slowest verification of ``schemes`` at ``hasher``'s costs
    (each the faster of two runs, so one hiccup does not count)."""
    slowest = 0.0
    secret = b"saslnetauth calibration"
    for scheme in schemes:
        stored = hasher.parse(hasher.hash(secret, scheme))
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            hasher.verify(secret, stored)
            best = min(best, time.perf_counter() - t0)
        slowest = max(slowest, best)
    return slowest


class FailureDeadline:
    """The failure deadline of one frontend. Thread-safe."""

    def __init__(self, failure_delay: float, measured: float = 0.0) -> None:
        self.failure_delay = failure_delay
        #: Slowest verification measured at start (seconds, without margin).
        self.measured = measured
        self._observed = 0.0
        self._observed_at = 0.0
        self._lock = threading.Lock()

    def floor(self, now: float | None = None) -> float:
        """Seconds the slowest verification may take, with margin."""
        now = time.monotonic() if now is None else now
        with self._lock:
            observed: float = self._observed * 0.5 ** ((now - self._observed_at) / DECAY_HALF_LIFE)
        return min(MAX_FLOOR, max(self.measured, observed) * MARGIN + MARGIN_ADD)

    def observe(self, seconds: float, now: float | None = None) -> None:
        """A verification took ``seconds``: the floor covers it from now on."""
        now = time.monotonic() if now is None else now
        seconds = min(seconds, OBSERVE_CAP * max(self.measured, 0.01))
        with self._lock:
            current = self._observed * 0.5 ** ((now - self._observed_at) / DECAY_HALF_LIFE)
            if seconds > current:
                self._observed, self._observed_at = seconds, now

    def carry_over(self, old: FailureDeadline) -> None:
        """Keep what ``old`` observed (a configuration reload)."""
        with old._lock:
            observed, at = old._observed, old._observed_at
        with self._lock:
            self._observed, self._observed_at = observed, at

    def base(self, now: float | None = None) -> float:
        """max(failure_delay, floor): the wait of a failure without penalties."""
        return max(self.failure_delay, self.floor(now))

    def at(self, arrival: float, *, wait: float = 0.0, extra: float = 0.0) -> float:
        """Monotonic time at which a failure that arrived at ``arrival`` is answered:
        after the client penalty ``wait``, the base delay and the user penalty
        ``extra``; at most :data:`MAX_ANSWER` after arrival."""
        return arrival + min(MAX_ANSWER, wait + self.base(arrival) + extra)


async def wait_until(deadline: float) -> None:
    """Sleep (asyncio) until the monotonic time ``deadline``."""
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def sleep_until(deadline: float) -> None:
    """Sleep (blocking) until the monotonic time ``deadline``."""
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
