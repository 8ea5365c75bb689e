"""The sending settings cache's rules that need a race to show (saslnetauth/sending/rows.py)."""

from __future__ import annotations

import asyncio
import threading

from saslnetauth.sending.rows import SettingsCache


class Db:
    """A row per name and a version; a read can be held in flight."""

    def __init__(self) -> None:
        self.value = "old"
        self.version = 1
        self.version_calls = 0
        self.hold = threading.Event()
        self.hold.set()
        self.reading = threading.Event()

    def read(self, name: str) -> str:
        value = self.value
        if name == "alice":
            self.reading.set()
            self.hold.wait(10)
        return f"{name}:{value}"

    def get_version(self) -> tuple[int]:
        self.version_calls += 1
        return (self.version,)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_read_that_began_before_a_dropping_check_is_not_kept() -> None:
    db, clock = Db(), Clock()
    cache = SettingsCache(db.read, db.get_version, 1.0, clock=clock)

    async def scenario() -> None:
        assert await cache.get("warm") == "warm:old"  # confirmed at 0
        db.hold.clear()
        db.reading.clear()
        slow = asyncio.ensure_future(cache.get("alice"))
        await asyncio.to_thread(db.reading.wait, 10)  # alice's read has read "old"
        db.value, db.version = "new", 2  # a change commits, then a check sees it
        clock.now = 1.0
        assert await cache.get("warm") == "warm:new"
        db.hold.set()
        assert await slow == "alice:old"  # its own decision uses what it read...
        assert await cache.get("alice") == "alice:new"  # ...but it was not kept

    asyncio.run(scenario())


def test_one_check_is_shared_by_every_decision_waiting() -> None:
    db, clock = Db(), Clock()
    cache = SettingsCache(db.read, db.get_version, 1.0, clock=clock)

    async def scenario() -> None:
        names = [f"u{i}" for i in range(20)]
        await asyncio.gather(*(cache.get(n) for n in names))
        assert db.version_calls == 1
        clock.now = 0.5
        await asyncio.gather(*(cache.get(n) for n in names))
        assert (db.version_calls, cache.reads) == (1, 20)
        clock.now = 1.5
        await asyncio.gather(*(cache.get(n) for n in names))
        assert (db.version_calls, cache.reads) == (2, 20)

    asyncio.run(scenario())


def test_zero_cache_seconds_reads_every_time_and_at_most_max_rows_are_kept() -> None:
    db, clock = Db(), Clock()
    never = SettingsCache(db.read, db.get_version, 0.0, clock=clock)
    bounded = SettingsCache(db.read, db.get_version, 1.0, max_rows=3, clock=clock)

    async def scenario() -> None:
        for _ in range(3):
            await never.get("alice")
        assert (never.reads, db.version_calls) == (3, 0)
        for name in ("a", "b", "c", "d"):
            await bounded.get(name)
        assert len(bounded) == 3
        await bounded.get("a")  # the oldest went first
        assert bounded.reads == 5

    asyncio.run(scenario())


def test_clear_drops_every_copy_before_cache_seconds() -> None:
    """A reload (SIGHUP) re-reads every user's settings at once, for a write that
    bypassed the triggers (the version did not move)."""
    db, clock = Db(), Clock()
    cache = SettingsCache(db.read, db.get_version, 60.0, clock=clock)

    async def scenario() -> None:
        assert await cache.get("bob") == "bob:old"
        db.value = "new"
        assert await cache.get("bob") == "bob:old"
        cache.clear()
        assert await cache.get("bob") == "bob:new"
        assert db.version_calls == 1

    asyncio.run(scenario())
