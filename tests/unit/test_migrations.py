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
