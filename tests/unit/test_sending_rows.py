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


class Everyone(Db):
    """``read_all`` too: every name of ``names``; it can be held in flight."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self.all_calls = 0
        self.all_hold = threading.Event()
        self.all_hold.set()
        self.all_reading = threading.Event()

    def read_all(self, most: int) -> dict[str, str] | None:
        self.all_calls += 1
        value = self.value
        self.all_reading.set()
        self.all_hold.wait(10)
        if len(self.names) > most:
            return None
        return {n: f"{n}:{value}" for n in self.names}


async def _preloaded(cache: SettingsCache[str]) -> None:
    """Wait for the preload in flight, if any."""
    for _ in range(1000):
        task = cache._preload
        if task is None or task.done():
            return
        await asyncio.sleep(0.001)


def test_a_change_reads_every_user_at_once_and_the_first_messages_read_nothing() -> None:
    db, clock = Everyone(["a", "b", "c"]), Clock()
    cache = SettingsCache(db.read, db.get_version, 1.0, read_all=db.read_all, clock=clock)

    async def scenario() -> None:
        assert await cache.get("a") == "a:old"  # the first check starts the preload
        await _preloaded(cache)
        assert (db.all_calls, cache.preloads) == (1, 1)
        reads = cache.reads
        assert [await cache.get(n) for n in ("b", "c")] == ["b:old", "c:old"]
        assert cache.reads == reads  # read at once, not one by one
        clock.now = 1.5  # the version stands still: no new preload
        assert await cache.get("b") == "b:old"
        assert db.all_calls == 1
        db.value, db.version = "new", 2
        clock.now = 3.0
        assert await cache.get("a") == "a:new"
        await _preloaded(cache)
        assert db.all_calls == 2
        assert await cache.get("c") == "c:new" and cache.reads == reads + 1

    asyncio.run(scenario())


def test_a_preload_that_began_before_a_dropping_check_is_not_kept() -> None:
    db, clock = Everyone(["a", "b"]), Clock()
    cache = SettingsCache(db.read, db.get_version, 1.0, read_all=db.read_all, clock=clock)

    async def scenario() -> None:
        db.all_hold.clear()
        assert await cache.get("a") == "a:old"
        await asyncio.to_thread(db.all_reading.wait, 10)  # the preload has read "old"
        db.value, db.version = "new", 2
        clock.now = 1.0
        assert await cache.get("a") == "a:new"  # this check dropped the copies
        db.all_reading.clear()
        db.all_hold.set()
        await _preloaded(cache)
        assert db.all_calls == 2  # started again, after the check
        assert cache.preloads == 1
        reads = cache.reads
        assert await cache.get("b") == "b:new" and cache.reads == reads

    asyncio.run(scenario())


def test_a_suspension_written_here_is_not_undone_by_a_preload_in_flight() -> None:
    """forget() (this server suspended the credential): what a preload read before it
    is not put back."""
    db, clock = Everyone(["a"]), Clock()
    cache = SettingsCache(db.read, db.get_version, 60.0, read_all=db.read_all, clock=clock)

    async def scenario() -> None:
        db.all_hold.clear()
        assert await cache.get("a") == "a:old"
        await asyncio.to_thread(db.all_reading.wait, 10)
        db.value = "suspended"
        cache.forget("a")
        db.all_hold.set()
        await _preloaded(cache)
        assert await cache.get("a") == "a:suspended"

    asyncio.run(scenario())


def test_no_preload_over_preload_max_without_a_version_or_when_it_fails() -> None:
    many, clock = Everyone(["a", "b", "c"]), Clock()
    over = SettingsCache(
        many.read, many.get_version, 1.0, read_all=many.read_all, preload_max=2, clock=clock
    )
    blind = Everyone(["a"])
    unversioned = SettingsCache(blind.read, lambda: None, 1.0, read_all=blind.read_all)

    def broken(most: int) -> dict[str, str] | None:
        raise RuntimeError("database down")

    failing_db = Db()
    failing = SettingsCache(failing_db.read, failing_db.get_version, 1.0, read_all=broken)

    async def scenario() -> None:
        await over.get("a")
        await _preloaded(over)
        assert (many.all_calls, over.preloads) == (1, 0)
        await over.get("b")
        assert over.reads == 2  # each user read at its first decision, as before
        await unversioned.get("a")
        await _preloaded(unversioned)
        assert blind.all_calls == 0
        assert await failing.get("a") == "a:old"
        await _preloaded(failing)
        assert failing.preloads == 0 and await failing.get("b") == "b:old"

    asyncio.run(scenario())
