"""rules_generation: a counter that database triggers bump on every change of global_networks.

Servers cache the global networks; before trusting a copy older than
``global_cache_seconds`` they read this counter (one primary-key lookup) and
reload when it moved. The triggers run inside the writer's own transaction,
so every writer is seen: saslnetauth's commands, imports, and admin scripts
writing SQL.

- SQLite, MariaDB/MySQL: one row trigger each for INSERT, UPDATE, DELETE
  (SQLite's "DELETE FROM t" fires them too: a table with triggers is not
  truncated wholesale). MariaDB's TRUNCATE fires no trigger; the servers
  also compare MAX(global_networks.id), which TRUNCATE changes.
- PostgreSQL: one statement trigger for INSERT, UPDATE, DELETE and TRUNCATE
  (one bump per statement, not per row), calling a PL/pgSQL function.

On MariaDB/MySQL with binary logging on, creating triggers needs the
SUPER privilege or ``log_bin_trust_function_creators = 1``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BUMP = "UPDATE rules_generation SET generation = generation + 1 WHERE id = 1"
_ROW_EVENTS = ("insert", "update", "delete")
_PG_FUNCTION = "saslnetauth_bump_rules_generation"
_PG_TRIGGER = "global_networks_generation"


def _row_trigger(event: str) -> str:
    return f"global_networks_generation_{event}"


def _dialect() -> str:
    return str(op.get_context().dialect.name)


def upgrade() -> None:
    op.create_table(
        "rules_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO rules_generation (id, generation) VALUES (1, 0)")
    dialect = _dialect()
    if dialect == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_BUMP}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {_PG_TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON global_networks FOR EACH STATEMENT EXECUTE PROCEDURE {_PG_FUNCTION}()"
        )
    elif dialect == "sqlite":
        for event in _ROW_EVENTS:
            op.execute(
                f"CREATE TRIGGER {_row_trigger(event)} AFTER {event.upper()} "
                f"ON global_networks BEGIN {_BUMP}; END"
            )
    else:  # mysql, mariadb
        for event in _ROW_EVENTS:
            op.execute(
                f"CREATE TRIGGER {_row_trigger(event)} AFTER {event.upper()} "
                f"ON global_networks FOR EACH ROW {_BUMP}"
            )


def downgrade() -> None:
    if _dialect() == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_PG_TRIGGER} ON global_networks")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for event in _ROW_EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {_row_trigger(event)}")
    op.drop_table("rules_generation")
