"""Alembic: upgrade from empty, downgrade to base, schema equals the models, on all databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from saslnetauth.store import SqlStore, migrate
from saslnetauth.store.schema import SCHEMA_REVISION, metadata


def test_code_expects_the_head_revision() -> None:
    assert migrate.head_revision() == SCHEMA_REVISION


def test_upgrade_downgrade_roundtrip(db_url: str) -> None:
    store = SqlStore(db_url)
    try:
        assert store.schema_revision() is None
        migrate.upgrade(store)
        assert store.schema_revision() == SCHEMA_REVISION
        migrate.upgrade(store)  # idempotent
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"users", "user_networks", "global_networks", "alembic_version"} <= tables
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], diff
        migrate.downgrade(store, "base")
        tables = set(sa.inspect(store.engine).get_table_names())
        assert not {"users", "user_networks", "global_networks"} & tables
        migrate.upgrade(store)
        assert store.schema_revision() == SCHEMA_REVISION
    finally:
        store.close()


def _triggers(store: SqlStore, table: str = "global_networks") -> set[str]:
    """Names of the triggers on ``table``."""
    queries = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
        "AND tgrelid = CAST(:t AS regclass)",
        "mysql": "SELECT trigger_name FROM information_schema.triggers "
        "WHERE event_object_schema = DATABASE() AND event_object_table = :t",
    }
    with store.engine.connect() as conn:
        query = queries.get(store.dialect, queries["mysql"])  # mysql or mariadb
        return {str(n) for n in conn.execute(sa.text(query), {"t": table}).scalars()}


def _generation(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT generation FROM rules_generation")).scalar_one())


def test_rules_generation_triggers_up_and_down(db_url: str) -> None:
    """0003 creates the counter and its triggers on each database; downgrade removes them."""
    store = SqlStore(db_url)
    try:
        migrate.upgrade(store, "0002")
        assert "rules_generation" not in sa.inspect(store.engine).get_table_names()
        migrate.upgrade(store)
        expected = (
            {"global_networks_generation"}
            if store.dialect == "postgresql"
            else {f"global_networks_generation_{e}" for e in ("insert", "update", "delete")}
        )
        assert _triggers(store) == expected
        assert _generation(store) == 0
        statements = [
            "INSERT INTO global_networks (network) VALUES ('192.0.2.0/24')",
            "INSERT INTO global_networks (network) VALUES ('198.51.100.0/24')",
            "UPDATE global_networks SET comment = 'x' WHERE network = '192.0.2.0/24'",
            "DELETE FROM global_networks WHERE network = '192.0.2.0/24'",
        ]
        for n, statement in enumerate(statements, start=1):
            with store.engine.begin() as conn:
                conn.execute(sa.text(statement))
            assert _generation(store) == n, statement
        with store.engine.begin() as conn:  # a statement that changes nothing bumps nothing
            conn.execute(sa.text("DELETE FROM global_networks WHERE network = 'none'"))
        assert _generation(store) in (4, 5)  # PostgreSQL's trigger is per statement
        migrate.downgrade(store, "0002")
        assert "rules_generation" not in sa.inspect(store.engine).get_table_names()
        assert _triggers(store) == set()
        with store.engine.begin() as conn:  # the table still works without them
            conn.execute(sa.text("INSERT INTO global_networks (network) VALUES ('10.0.0.0/8')"))
        if store.dialect == "postgresql":
            with store.engine.connect() as conn:
                fn = "SELECT count(*) FROM pg_proc WHERE proname = 'saslnetauth_bump_rules_generation'"
                assert conn.execute(sa.text(fn)).scalar() == 0
        migrate.upgrade(store)
        assert _triggers(store) == expected
    finally:
        store.close()


def _sending_generation(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        query = "SELECT generation FROM sending_generation WHERE id = 1"
        return int(conn.execute(sa.text(query)).scalar_one())


def test_sending_generation_moves_on_settings_changes_only(db_url: str) -> None:
    """0009: adding or deleting a user or an app password, or changing a name, a limit or
    a suspension, moves the counter (whoever writes the SQL); the server's own updates
    (last use, updated_at, a new hash) do not; downgrade removes table and triggers."""
    store = SqlStore(db_url)
    try:
        migrate.upgrade(store, "0008")
        assert "sending_generation" not in sa.inspect(store.engine).get_table_names()
        migrate.upgrade(store)
        expected = {t: _trigger_names(store.dialect, t) for t in ("users", "app_passwords")}
        assert {t: _triggers(store, t) for t in expected} == expected
        assert _sending_generation(store) == 0
        app = (
            "INSERT INTO app_passwords (user_id, label, token_id, secret_hash) "
            "SELECT id, 'phone', 'tok1', 'x' FROM users WHERE name = 'alice'"
        )
        steps = [
            ("INSERT INTO users (name, password_hash) VALUES ('alice', '{PLAIN}a')", True),
            ("UPDATE users SET messages_per_hour = 5 WHERE name = 'alice'", True),
            ("UPDATE users SET updated_at = CURRENT_TIMESTAMP WHERE name = 'alice'", False),
            ("UPDATE users SET password_hash = '{PLAIN}b' WHERE name = 'alice'", False),
            ("UPDATE users SET suspended_at = CURRENT_TIMESTAMP WHERE name = 'alice'", True),
            ("UPDATE users SET name = 'alice2' WHERE name = 'alice'", True),
            ("UPDATE users SET name = 'alice' WHERE name = 'alice2'", True),
            (app, True),
            ("UPDATE app_passwords SET last_used_at = CURRENT_TIMESTAMP", False),
            ("UPDATE app_passwords SET recipients_per_day = 9", True),
            ("UPDATE app_passwords SET suspended_at = CURRENT_TIMESTAMP", True),
            ("DELETE FROM app_passwords", True),
            ("DELETE FROM users WHERE name = 'alice'", True),
        ]
        for statement, moves in steps:
            before = _sending_generation(store)
            with store.engine.begin() as conn:
                conn.execute(sa.text(statement))
            assert (_sending_generation(store) > before) is moves, statement
        assert store.sending_version() == (_sending_generation(store), None, None)
        migrate.downgrade(store, "0008")
        assert "sending_generation" not in sa.inspect(store.engine).get_table_names()
        assert {t: _triggers(store, t) for t in expected} == {t: set() for t in expected}
        with store.engine.begin() as conn:  # the tables still work without them
            conn.execute(sa.text("INSERT INTO users (name) VALUES ('bob')"))
            conn.execute(sa.text("UPDATE users SET messages_per_hour = 1"))
        migrate.upgrade(store)
        assert {t: _triggers(store, t) for t in expected} == expected
    finally:
        store.close()


def _trigger_names(dialect: str, table: str) -> set[str]:
    if dialect == "postgresql":
        return {f"{table}_sending_generation", f"{table}_sending_generation_update"}
    return {f"{table}_sending_generation_{e}" for e in ("insert", "update", "delete")}
