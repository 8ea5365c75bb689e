"""The policy server's copies of the sending settings (saslnetauth/sending/rows.py), on
SQLite, PostgreSQL and MariaDB: kept while the database's version stands still, dropped
within ``cache_seconds`` of any writer's change, never kept when the check fails."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.errors import BackendError
from saslnetauth.sending.limits import SendingPolicy, credential_plans
from saslnetauth.sending.logins import LoginLinks
from saslnetauth.sending.rows import SettingsCache
from saslnetauth.sending.state import EmbeddedState
from saslnetauth.settings import SendingConfig
from saslnetauth.store import SqlStore
from saslnetauth.store.sending import SendingRow

CACHE = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sql(store: SqlStore, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement))


def _cache(store: SqlStore, clock: Clock) -> SettingsCache[SendingRow | None]:
    return SettingsCache(store.sending_row, store.sending_version, CACHE, clock=clock)


def _hourly(row: SendingRow | None) -> int | None:
    assert row is not None
    return row.main.limits["messages_per_hour"]


def test_kept_until_any_writer_changes_a_setting(store: SqlStore) -> None:
    store.add_user("alice", "{PLAIN}a")
    _sql(store, "UPDATE users SET messages_per_hour = 10 WHERE name = 'alice'")
    clock = Clock()
    cache = _cache(store, clock)

    async def scenario() -> None:
        assert _hourly(await cache.get("alice")) == 10
        assert await cache.get("nobody") is None
        reads = cache.reads
        for _ in range(50):  # one message after another: no row read, no check
            assert _hourly(await cache.get("alice")) == 10
            assert await cache.get("nobody") is None
        assert (cache.reads, cache.checks) == (reads, 1)

        # the server's own writes (a last use, a new hash) move nothing: still kept
        _sql(store, "UPDATE users SET password_hash = '{PLAIN}b', updated_at = CURRENT_TIMESTAMP")
        clock.now += CACHE
        assert _hourly(await cache.get("alice")) == 10
        assert (cache.reads, cache.checks) == (reads, 2)

        # an admin script's UPDATE: seen once cache_seconds have passed, not before
        _sql(store, "UPDATE users SET messages_per_hour = 3 WHERE name = 'alice'")
        clock.now += CACHE / 2
        assert _hourly(await cache.get("alice")) == 10
        clock.now += CACHE / 2
        assert _hourly(await cache.get("alice")) == 3
        assert cache.reads == reads + 1

        # a new user (the unknown name was kept as unknown) and a suspension
        store.add_user("nobody", "{PLAIN}n")
        _sql(store, "UPDATE users SET suspended_at = CURRENT_TIMESTAMP WHERE name = 'alice'")
        clock.now += CACHE
        assert await cache.get("nobody") is not None
        row = await cache.get("alice")
        assert row is not None and row.main.suspended_at is not None
        # read on the driver's own connection: still the time it was written (UTC)
        assert abs(row.main.suspended_at.timestamp() - time.time()) < 3600

    asyncio.run(scenario())


def test_a_suspension_a_script_wrote_as_no_time_still_suspends(sqlite_store: SqlStore) -> None:
    sqlite_store.add_user("alice", "{PLAIN}a")
    _sql(sqlite_store, "UPDATE users SET suspended_at = 'yes' WHERE name = 'alice'")
    row = sqlite_store.sending_row("alice")
    assert row is not None and row.main.suspended_at is not None


def test_a_failing_check_fails_the_decision_and_keeps_nothing(store: SqlStore) -> None:
    store.add_user("alice", "{PLAIN}a")
    clock = Clock()
    cache = _cache(store, clock)

    async def scenario() -> None:
        assert await cache.get("alice") is not None
        _sql(store, "ALTER TABLE sending_generation RENAME TO sending_generation_away")
        try:
            clock.now += CACHE
            with pytest.raises(BackendError):
                await cache.get("alice")
            with pytest.raises(BackendError):  # and again: no grace period
                await cache.get("alice")
        finally:
            _sql(store, "ALTER TABLE sending_generation_away RENAME TO sending_generation")
        _sql(store, "UPDATE users SET messages_per_hour = 7 WHERE name = 'alice'")
        assert _hourly(await cache.get("alice")) == 7

    asyncio.run(scenario())


def test_no_version_row_rereads_every_cache_seconds(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_user("alice", "{PLAIN}a")
    _sql(store, "DELETE FROM sending_generation")
    clock = Clock()
    cache = _cache(store, clock)

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="saslnetauth.sending"):
            await cache.get("alice")
            await cache.get("alice")
            assert cache.reads == 1
            _sql(store, "UPDATE users SET messages_per_hour = 4 WHERE name = 'alice'")
            clock.now += CACHE
            assert _hourly(await cache.get("alice")) == 4  # dropped although no counter moved
            clock.now += CACHE
            await cache.get("alice")
            assert cache.reads == 3

    asyncio.run(scenario())
    warned = [r for r in caplog.records if "sending_generation has no row 1" in r.getMessage()]
    assert len(warned) == 1


def test_every_users_settings_at_once_are_each_users_own(store: SqlStore) -> None:
    """``sending_rows`` (the policy server's preload) gives what ``sending_row`` gives
    for each user, app passwords and suspensions included; None over the bound."""
    for name in ("alice", "bob", "carol"):
        store.add_user(name, "{PLAIN}x")
    store.add_app_password("alice", "phone", new_token)
    store.add_app_password("alice", "tablet", new_token)
    store.set_sending_limits("alice", "phone", {"messages_per_hour": 5})
    store.set_sending_limits("bob", None, {"recipients_per_day": 9})
    store.suspend("alice", "tablet")
    everyone = store.sending_rows(3)
    assert everyone is not None and sorted(everyone) == ["alice", "bob", "carol"]
    for name, row in everyone.items():
        assert row == store.sending_row(name)
    alice = everyone["alice"]
    assert sorted(alice.apps) == ["phone", "tablet"]
    assert alice.apps["phone"].limits["messages_per_hour"] == 5
    assert alice.apps["tablet"].suspended_at is not None
    assert everyone["bob"].main.limits["recipients_per_day"] == 9
    assert store.sending_rows(2) is None


def test_the_policy_servers_preload_gives_each_user_its_own_plans(store: SqlStore) -> None:
    """Users with the same settings share one value in the preload; each user's plans
    are still exactly the ones its own row gives."""
    for name in ("alice", "bob", "carol", "dave"):
        store.add_user(name, "{PLAIN}x")
    store.add_app_password("alice", "phone", new_token)
    store.set_sending_limits("bob", None, {"messages_per_hour": 3})
    store.suspend("carol", None)
    cfg = SendingConfig(messages_per_hour=10)
    state = EmbeddedState()
    policy = SendingPolicy(
        cfg,
        state,
        LoginLinks(state, "t:", 60),
        store.sending_row,
        store.suspend,
        read_version=store.sending_version,
        read_rows=store.sending_rows,
    )

    async def scenario() -> dict[str, object]:
        await policy.rows.get("alice")
        for _ in range(2000):  # the preload runs beside the decisions
            if policy.rows.preloads:
                break
            await asyncio.sleep(0.005)
        reads = policy.rows.reads
        got = {n: await policy.rows.get(n) for n in ("alice", "bob", "carol", "dave")}
        assert policy.rows.reads == reads  # all four came from the preload
        await policy.rows.close()
        return got

    got = asyncio.run(scenario())
    for name, value in got.items():
        row = store.sending_row(name)
        assert value == (row, credential_plans(cfg, row)), name
    assert got["bob"] != got["dave"] and got["carol"] != got["dave"]
