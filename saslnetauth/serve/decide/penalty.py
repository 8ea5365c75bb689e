"""Brute-force brakes: exponential delays per client network (and per user). Pure.

Modelled on Dovecot's ``auth_penalty`` (``src/auth/auth-penalty.c``):
every failure from a client raises that client's penalty, the delay grows
exponentially with the number of recent failures up to a cap, and a
success clears it. Here the cap is kept well inside Postfix's 10 s
timeout, IPv6 clients are grouped by a prefix (default /64, since one
host usually owns a whole /64), and memory is bounded by an LRU limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from saslnetauth.policy.rules.addresses import Address, client_key

__all__ = ["Penalty", "PenaltyBox", "client_bucket", "client_key"]


@dataclass(slots=True)
class Penalty:
    failures: int
    last: float


def client_bucket(
    addr: Address | None, ipv4_prefix: int = 32, ipv6_prefix: int = 64
) -> tuple[int, int] | None:
    """:func:`client_key` as a cheap tuple (IP version, network bits) of a login's
    parsed address, for the per-login penalty lookups; ``None`` for no address."""
    if addr is None:
        return None
    if addr.version == 4:
        return 4, addr.value >> (32 - ipv4_prefix)
    return 6, addr.value >> (128 - ipv6_prefix)


class PenaltyBox:
    """Failure counts per key with exponential delay, LRU-bounded and expiring.

    ``delay(key, now)`` is the extra delay for a request from ``key``:
    0 until ``free_failures`` recent failures (at least one), then ``base``,
    doubling with each further failure, at most ``cap`` seconds.
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        cap: float = 5.0,
        free_failures: int = 2,
        expire: float = 3600.0,
        max_entries: int = 100_000,
    ) -> None:
        self.base = base
        self.cap = cap
        self.free_failures = free_failures
        self.expire = expire
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Penalty] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def retune(self, *, base: float, cap: float, free_failures: int, max_entries: int) -> None:
        """New settings (a reload), keeping the failures counted so far."""
        self.base, self.cap, self.free_failures = base, cap, free_failures
        self.max_entries = max_entries
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _get(self, key: Hashable, now: float) -> Penalty | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last > self.expire:
            del self._entries[key]
            return None
        return entry

    def failures(self, key: Hashable | None, now: float) -> int:
        if key is None:
            return 0
        entry = self._get(key, now)
        return entry.failures if entry else 0

    def most(self, now: float) -> int:
        """The most failures one key has now (with repeats left out by the caller: the
        most distinct wrong passwords of one client or user), for /metrics."""
        return max(
            (e.failures for e in self._entries.values() if now - e.last <= self.expire),
            default=0,
        )

    def delay(self, key: Hashable | None, now: float) -> float:
        if key is None:
            return 0.0
        return self.delay_for(self.failures(key, now))

    def delay_for(self, failures: int) -> float:
        """The delay of ``failures`` recent failures (counted here or elsewhere: the
        shared brake's store, :mod:`saslnetauth.serve.decide.sharedpenalty`)."""
        if self.cap <= 0 or failures == 0 or failures < self.free_failures:
            return 0.0
        n = failures - max(self.free_failures, 1)
        return float(min(self.cap, self.base * (2 ** min(n, 30))))

    def record_failure(self, key: Hashable | None, now: float) -> None:
        if key is None:
            return
        entry = self._get(key, now)
        if entry is None:
            entry = Penalty(0, now)
            self._entries[key] = entry
        entry.failures += 1
        entry.last = now
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def record_success(self, key: Hashable | None) -> None:
        if key is not None:
            self._entries.pop(key, None)
