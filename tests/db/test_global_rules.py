"""Global networks are never stale (issue 11 items 1-3), on SQLite, PostgreSQL and MariaDB.

Every test goes through the server's own engine (``build_server_engine``,
as each worker process builds it) with a short ``global_cache_seconds``:
a change is committed, the test waits longer than ``global_cache_seconds``,
and then the FIRST login must already be decided on the changed rules.
Nothing here depends on an upper time bound: the sleeps only make sure
that the cache has expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from saslnetauth.config import Config
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Verdict
from saslnetauth.runtime import build_server_engine
from saslnetauth.store import SqlStore
from tests.support.clitools import run

CACHE = 0.3
PW = "pw-for-bob"


def _expire() -> None:
    """Wait until a copy cached before now is older than ``global_cache_seconds``."""
    time.sleep(CACHE * 2)


def _server_engine(store: SqlStore, network_sql: str, cache_seconds: float) -> DecisionEngine:
    """bob (password PW) plus one network row, and a server's engine on them."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (name, password_hash) VALUES ('bob', :h)"),
            {"h": "{PLAIN}" + PW},
        )
        conn.execute(sa.text(network_sql))
    cfg = Config(database_url=store.url, global_cache_seconds=cache_seconds)
    cfg.report.record = False
    return build_server_engine(cfg)


@pytest.fixture
def engine(store: SqlStore) -> Iterator[DecisionEngine]:
    """bob (no networks of his own) and the global network 192.0.2.0/24 for smtp."""
    eng = _server_engine(
        store,
        "INSERT INTO global_networks (network, services) VALUES ('192.0.2.0/24', 'smtp')",
        CACHE,
    )
    yield eng
    eng.close()


def _login(eng: DecisionEngine, rip: str, service: str = "smtp") -> Verdict:
    return eng.decide(Login.of("bob", PW, rip, service), quiet=True).verdict


def _sql(store: SqlStore, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement))


def _cli(store: SqlStore, *args: str) -> None:
    r = run(*args, db=store.url)
    assert r.code == 0, (args, r.out, r.err)


def _warm(eng: DecisionEngine) -> None:
    """Load the cache, and prove the starting point."""
    assert _login(eng, "192.0.2.7") is Verdict.OK
    assert _login(eng, "198.51.100.7") is Verdict.FAIL


#: (CLI command, the same change in SQL, address, verdict of its first login after the change)
CHANGES = {
    "added": (
        ("net", "add", "198.51.100.0/24"),
        "INSERT INTO global_networks (network) VALUES ('198.51.100.0/24')",
        "198.51.100.7",
        Verdict.OK,
    ),
    "removed": (
        ("net", "del", "192.0.2.0/24"),
        "DELETE FROM global_networks WHERE network = '192.0.2.0/24'",
        "192.0.2.7",
        Verdict.FAIL,
    ),
}


@pytest.mark.parametrize("via", ["cli", "sql"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_change_decides_the_first_login_after_cache_seconds(
    store: SqlStore, engine: DecisionEngine, via: str, change: str
) -> None:
    command, statement, rip, verdict = CHANGES[change]
    _warm(engine)
    if via == "cli":
        _cli(store, *command)
    else:
        _sql(store, statement)
    _expire()
    assert _login(engine, rip) is verdict


def test_network_edited_in_place_seen_by_first_login(
    store: SqlStore, engine: DecisionEngine
) -> None:
    _warm(engine)
    _sql(store, "UPDATE global_networks SET network = '203.0.113.0/24'")
    _expire()
    assert _login(engine, "192.0.2.7") is Verdict.FAIL
    assert _login(engine, "203.0.113.7") is Verdict.OK


def test_services_edited_in_place_seen_by_first_login(
    store: SqlStore, engine: DecisionEngine
) -> None:
    _warm(engine)
    _sql(store, "UPDATE global_networks SET services = 'imap'")
    _expire()
    assert _login(engine, "192.0.2.7", "smtp") is Verdict.FAIL
    assert _login(engine, "192.0.2.7", "imap") is Verdict.OK


def test_emptied_table_seen_by_first_login(store: SqlStore, engine: DecisionEngine) -> None:
    """Also TRUNCATE, which fires no row trigger on MariaDB."""
    _warm(engine)
    _sql(
        store,
        "DELETE FROM global_networks"
        if store.dialect == "sqlite"
        else "TRUNCATE TABLE global_networks",
    )
    _expire()
    assert _login(engine, "192.0.2.7") is Verdict.FAIL


def test_deleted_then_added_with_reused_id(store: SqlStore, engine: DecisionEngine) -> None:
    """`net del X; net add Y`: SQLite gives Y the id of X; count, max and sum of ids match."""
    _warm(engine)
    with store.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT id FROM global_networks")).scalars().all()
    _cli(store, "net", "del", "192.0.2.0/24")
    _cli(store, "net", "add", "198.51.100.0/24", "--service", "smtp")
    with store.engine.connect() as conn:
        after = conn.execute(sa.text("SELECT id FROM global_networks")).scalars().all()
    if store.dialect == "sqlite":
        assert after == before  # the id really was reused
    _expire()
    assert _login(engine, "192.0.2.7") is Verdict.FAIL
    assert _login(engine, "198.51.100.7") is Verdict.OK


def test_user_networks_are_read_at_every_login(store: SqlStore) -> None:
    """No cache for per-user networks: a change is seen at once, whatever global_cache_seconds."""
    eng = _server_engine(
        store,
        "INSERT INTO user_networks (user_id, network) "
        "SELECT id, '192.0.2.0/24' FROM users WHERE name = 'bob'",
        3600,
    )
    try:
        assert _login(eng, "192.0.2.7") is Verdict.OK
        _sql(store, "UPDATE user_networks SET network = '198.51.100.0/24'")
        assert _login(eng, "192.0.2.7") is Verdict.FAIL
        assert _login(eng, "198.51.100.7") is Verdict.OK
        _sql(store, "DELETE FROM user_networks")
        assert _login(eng, "198.51.100.7") is Verdict.FAIL
    finally:
        eng.close()


def test_odd_prefix_row_is_skipped_and_later_changes_are_seen(
    store: SqlStore, engine: DecisionEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """`10.0.0.0/²`: skipped with one log line; the other rows work; later changes are seen."""
    _sql(store, "INSERT INTO global_networks (network) VALUES ('10.0.0.0/²')")
    _sql(store, "INSERT INTO global_networks (network) VALUES ('198.51.100.0/24')")
    with caplog.at_level(logging.ERROR, logger="saslnetauth"):
        assert _login(engine, "192.0.2.7") is Verdict.OK
        assert _login(engine, "198.51.100.7") is Verdict.OK
        assert _login(engine, "10.1.2.3") is Verdict.FAIL
        _sql(store, "DELETE FROM global_networks WHERE network = '192.0.2.0/24'")
        _expire()
        assert _login(engine, "192.0.2.7") is Verdict.FAIL
        assert _login(engine, "198.51.100.7") is Verdict.OK
        _sql(store, "DELETE FROM global_networks WHERE network = '198.51.100.0/24'")
        _expire()
        assert _login(engine, "198.51.100.7") is Verdict.FAIL
    skipped = [
        r.getMessage() for r in caplog.records if "invalid network row skipped" in r.getMessage()
    ]
    assert len(skipped) == 1, skipped
    assert "10.0.0.0/²" in skipped[0] and "table=global_networks" in skipped[0]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere


def test_failing_refresh_is_tempfail_never_the_old_rules(
    store: SqlStore, engine: DecisionEngine
) -> None:
    """Once the cached copy is older than global_cache_seconds it is never used again
    unless the database confirms it: a failing check is TEMPFAIL, then recovery."""
    _warm(engine)
    rename = "ALTER TABLE {} RENAME TO {}"
    _sql(store, rename.format("global_networks", "global_networks_away"))
    try:
        _expire()
        for _ in range(3):
            assert _login(engine, "192.0.2.7") is Verdict.TEMPFAIL
    finally:
        _sql(store, rename.format("global_networks_away", "global_networks"))
    _expire()
    assert _login(engine, "192.0.2.7") is Verdict.OK


def test_odd_prefix_row_is_listed_as_invalid(store: SqlStore) -> None:
    """`net list` shows the row as invalid instead of failing (it exited 70)."""
    _sql(store, "INSERT INTO global_networks (network) VALUES ('10.0.0.0/²')")
    _sql(store, "INSERT INTO global_networks (network) VALUES ('192.0.2.0/24')")
    r = run("net", "list", "--json", db=store.url)
    assert r.code == 0, r.err
    assert '"10.0.0.0/²"' in r.out or "10.0.0.0/\\u00b2" in r.out
    assert "192.0.2.0/24" in r.out


def test_missing_generation_row_rereads_every_time(
    store: SqlStore, engine: DecisionEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the counter's row the triggers update nothing: the rows are re-read
    at every check instead (slower, never stale), and the error says how to fix it."""
    _sql(store, "DELETE FROM rules_generation")
    with caplog.at_level(logging.ERROR, logger="saslnetauth"):
        _warm(engine)
        _sql(store, "UPDATE global_networks SET network = '203.0.113.0/24'")
        _expire()
        assert _login(engine, "192.0.2.7") is Verdict.FAIL
        assert _login(engine, "203.0.113.7") is Verdict.OK
    missing = [r for r in caplog.records if "rules_generation has no row 1" in r.getMessage()]
    assert len(missing) == 1


def test_generation_check_failing_is_tempfail(store: SqlStore, engine: DecisionEngine) -> None:
    """The counter itself unreadable: TEMPFAIL, not the cached copy."""
    _warm(engine)
    _sql(store, "ALTER TABLE rules_generation RENAME TO rules_generation_away")
    try:
        _expire()
        assert _login(engine, "192.0.2.7") is Verdict.TEMPFAIL
        assert _login(engine, "198.51.100.7") is Verdict.TEMPFAIL
    finally:
        _sql(store, "ALTER TABLE rules_generation_away RENAME TO rules_generation")
    assert _login(engine, "192.0.2.7") is Verdict.OK


def test_odd_user_network_row_is_skipped_and_logged_once(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The same for a user's own network: skipped, logged once, the valid row still admits."""
    eng = _server_engine(
        store,
        "INSERT INTO user_networks (user_id, network) "
        "SELECT id, '10.0.0.0/²' FROM users WHERE name = 'bob'",
        3600,
    )
    _sql(
        store,
        "INSERT INTO user_networks (user_id, network) "
        "SELECT id, '192.0.2.0/24' FROM users WHERE name = 'bob'",
    )
    try:
        with caplog.at_level(logging.ERROR, logger="saslnetauth"):
            for _ in range(3):
                assert _login(eng, "192.0.2.7") is Verdict.OK
                assert _login(eng, "10.1.2.3") is Verdict.FAIL
    finally:
        eng.close()
    skipped = [m for m in caplog.messages if "invalid network row skipped" in m]
    assert len(skipped) == 1, skipped
    assert "table=user_networks" in skipped[0] and "user=bob" in skipped[0]
