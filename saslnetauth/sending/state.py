"""Where the sending counters and the login links live: in this process, or in Redis.

A counter is a sliding window cut into buckets (:class:`Window`): an hour of 60
one-minute buckets, a day of 96 quarter hours. Its value is the sum of the
buckets inside the window, so it is exact to one bucket's width, and its memory
is at most ``buckets`` numbers however much is sent. :meth:`SendingState.take`
checks every counter of a request against its limit and adds the amount to all
of them only when none would go over: one atomic step (in Redis one server-side
script, :mod:`saslnetauth.sending.redisstate`; here one call on the event loop),
so twenty clients racing on one credential get exactly the limit.

A sending decision reads the login map of (user, client address) and takes the
counters of its credentials in one step too (:mod:`saslnetauth.sending.linked`;
in Redis one script: one round trip).

Every key expires: a counter one window after its last use, a login link or map
after its time to live. :class:`EmbeddedState` also holds at most ``max_keys`` counters
and as many links (the oldest go first), for one host with nothing to install.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DAY",
    "HOUR",
    "Counter",
    "EmbeddedState",
    "SendingState",
    "StateError",
    "Taken",
    "Window",
]


class StateError(Exception):
    """The state store did not answer (sending then defers: fail closed)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window of ``seconds`` cut into ``buckets`` buckets."""

    name: str
    seconds: int
    buckets: int

    @property
    def width(self) -> int:
        return self.seconds // self.buckets

    def bucket(self, now: float) -> int:
        return int(now // self.width)


HOUR = Window("hour", 3600, 60)
DAY = Window("day", 86400, 96)


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter of a request: its key, window and limit (0 or less: no limit)."""

    key: str
    window: Window
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`SendingState.take` did: ``ok`` (added), the counts before it, and
    the index of the first counter that would have gone over (-1: none)."""

    ok: bool
    counts: tuple[int, ...]
    over: int = -1


class SendingState(Protocol):
    """The operations the policy server and the responder need."""

    async def take(self, counters: Sequence[Counter], amount: int, now: float) -> Taken:
        """Add ``amount`` to every counter unless one would pass its limit (atomic)."""

    async def peek(self, counters: Sequence[Counter], now: float) -> tuple[int, ...]:
        """The counts, unchanged."""

    async def put_link(self, key: str, value: str, ttl: int) -> None:
        """Remember a login link for ``ttl`` seconds."""

    async def get_link(self, key: str) -> str | None:
        """A login link, None when unknown or expired."""

    async def note_login(self, key: str, name: str, value: str, ttl: int) -> None:
        """Set ``name`` in the login map ``key``, which lives ``ttl`` seconds after."""

    async def login_fields(self, key: str) -> dict[str, str]:
        """The login map ``key`` (empty when unknown or expired)."""

    async def close(self) -> None: ...


class EmbeddedState:
    """The state of one host, in this process (single event loop: each call is atomic)."""

    def __init__(self, max_keys: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._counts: dict[str, dict[int, int]] = {}
        self._links: dict[str, tuple[str, float]] = {}
        self._expires: dict[str, float] = {}
        self._logins: dict[str, tuple[dict[str, str], float]] = {}

    def __len__(self) -> int:
        return len(self._counts) + len(self._links) + len(self._logins)

    def _sum(self, c: Counter, now: float) -> int:
        buckets = self._counts.get(c.key)
        if not buckets or self._expires.get(c.key, 0.0) <= now:
            return 0
        first = c.window.bucket(now) - c.window.buckets + 1
        for b in [b for b in buckets if b < first]:
            del buckets[b]
        return sum(buckets.values())

    async def take(self, counters: Sequence[Counter], amount: int, now: float) -> Taken:
        counts = tuple(self._sum(c, now) for c in counters)
        for i, (c, n) in enumerate(zip(counters, counts, strict=True)):
            if c.limit > 0 and n + amount > c.limit:
                return Taken(False, counts, i)
        for c in counters:
            if self._expires.get(c.key, 0.0) <= now:
                self._counts.pop(c.key, None)
            buckets = self._counts.setdefault(c.key, {})
            b = c.window.bucket(now)
            buckets[b] = buckets.get(b, 0) + amount
            self._expires[c.key] = now + c.window.seconds + c.window.width
        self._bound(now)
        return Taken(True, counts)

    async def peek(self, counters: Sequence[Counter], now: float) -> tuple[int, ...]:
        return tuple(self._sum(c, now) for c in counters)

    async def put_link(self, key: str, value: str, ttl: int) -> None:
        now = self.clock()
        self._links.pop(key, None)  # to the end: the newest
        self._links[key] = (value, now + ttl)
        self._bound(now)

    async def get_link(self, key: str) -> str | None:
        found = self._links.get(key)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    async def note_login(self, key: str, name: str, value: str, ttl: int) -> None:
        now = self.clock()
        fields, expires = self._logins.pop(key, ({}, 0.0))  # to the end: the newest
        if expires <= now:
            fields = {}
        fields[name] = value
        self._logins[key] = (fields, now + ttl)
        if len(self._logins) > self.max_keys:
            for k in [k for k, (_, t) in self._logins.items() if t <= now]:
                del self._logins[k]
            while len(self._logins) > self.max_keys:
                del self._logins[next(iter(self._logins))]

    async def login_fields(self, key: str) -> dict[str, str]:
        found = self._logins.get(key)
        if found is None or found[1] <= self.clock():
            return {}
        return dict(found[0])

    async def close(self) -> None:
        self._counts.clear()
        self._links.clear()
        self._logins.clear()
        self._expires.clear()

    def _bound(self, now: float) -> None:
        """At most ``max_keys`` counters and ``max_keys`` links: the expired go
        first, then the oldest (a link is re-inserted at each login)."""
        if len(self._counts) > self.max_keys:
            for key in [k for k, t in self._expires.items() if t <= now]:
                del self._expires[key]
                self._counts.pop(key, None)
            while len(self._counts) > self.max_keys:
                oldest = next(iter(self._counts))
                del self._counts[oldest]
                self._expires.pop(oldest, None)
        if len(self._links) > self.max_keys:
            for key in [k for k, (_, t) in self._links.items() if t <= now]:
                del self._links[key]
            while len(self._links) > self.max_keys:
                del self._links[next(iter(self._links))]
