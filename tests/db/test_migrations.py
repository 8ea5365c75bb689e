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


def _triggers(store: SqlStore) -> set[str]:
    """Names of the triggers on global_networks."""
    queries = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name = 'global_networks'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
        "AND tgrelid = 'global_networks'::regclass",
        "mysql": "SELECT trigger_name FROM information_schema.triggers "
        "WHERE event_object_schema = DATABASE() AND event_object_table = 'global_networks'",
    }
    with store.engine.connect() as conn:
        query = queries.get(store.dialect, queries["mysql"])  # mysql or mariadb
        return {str(n) for n in conn.execute(sa.text(query)).scalars()}


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
