"""sending_generation: a counter that database triggers bump on every change of the
sending settings (the users' and app passwords' limits and suspensions).

The policy server of ``[sending]`` keeps each user's settings in memory; before
trusting its copies longer than ``global_cache_seconds`` it reads this counter (one
primary-key lookup, shared by every decision of that moment) and drops them all
when it moved. So a Postfix policy decision no longer reads a user's row for every
message, and a change is still seen within ``global_cache_seconds``, whoever
writes it (saslnetauth's commands, a suspension by another MX host, SQL from an
admin script).

The triggers fire on rows added or deleted in ``users`` and ``app_passwords``,
and on updates of the columns the settings are made of (``name``, ``label``,
``user_id``, the four limits, ``suspended_at``); the updates the server makes
itself (``last_used_at``, ``updated_at``, a password hash) bump nothing.

- SQLite: row triggers, ``AFTER UPDATE OF`` those columns.
- PostgreSQL: statement triggers (one bump per statement) calling a PL/pgSQL
  function; ``UPDATE OF`` those columns, and ``TRUNCATE``.
- MariaDB/MySQL (no ``UPDATE OF``): row triggers whose bump is conditioned on
  one of those columns changing (``<=>``, NULL-safe). A TRUNCATE fires no
  trigger (InnoDB refuses it on these tables, which foreign keys reference);
  the servers also compare ``MAX(id)`` of both tables.

On MariaDB/MySQL with binary logging on, creating triggers needs the
SUPER privilege or ``log_bin_trust_function_creators = 1``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LIMITS = ("messages_per_hour", "recipients_per_hour", "messages_per_day", "recipients_per_day")
#: table -> the columns a sending settings copy is made of (besides its id)
COLUMNS = {
    "users": ("name", *LIMITS, "suspended_at"),
    "app_passwords": ("user_id", "label", *LIMITS, "suspended_at"),
}
_BUMP = "UPDATE sending_generation SET generation = generation + 1 WHERE id = 1"
_PG_FUNCTION = "saslnetauth_bump_sending_generation"


def trigger_names(dialect: str, table: str) -> set[str]:
    """The triggers this migration creates on ``table`` (the tests compare them)."""
    if dialect == "postgresql":
        return {f"{table}_sending_generation", f"{table}_sending_generation_update"}
    return {f"{table}_sending_generation_{e}" for e in ("insert", "update", "delete")}


def _dialect() -> str:
    return str(op.get_context().dialect.name)


def upgrade() -> None:
    op.create_table(
        "sending_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO sending_generation (id, generation) VALUES (1, 0)")
    dialect = _dialect()
    if dialect == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_BUMP}; RETURN NULL; END $$"
        )
    for table, columns in COLUMNS.items():
        name = f"{table}_sending_generation"
        if dialect == "postgresql":
            op.execute(
                f"CREATE TRIGGER {name} AFTER INSERT OR DELETE OR TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE PROCEDURE {_PG_FUNCTION}()"
            )
            op.execute(
                f"CREATE TRIGGER {name}_update AFTER UPDATE OF {', '.join(columns)} "
                f"ON {table} FOR EACH STATEMENT EXECUTE PROCEDURE {_PG_FUNCTION}()"
            )
        elif dialect == "sqlite":
            for event in ("INSERT", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {name}_{event.lower()} AFTER {event} ON {table} "
                    f"BEGIN {_BUMP}; END"
                )
            op.execute(
                f"CREATE TRIGGER {name}_update AFTER UPDATE OF {', '.join(columns)} "
                f"ON {table} BEGIN {_BUMP}; END"
            )
        else:  # mysql, mariadb
            for event in ("INSERT", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {name}_{event.lower()} AFTER {event} ON {table} "
                    f"FOR EACH ROW {_BUMP}"
                )
            same = " AND ".join(f"NEW.{c} <=> OLD.{c}" for c in columns)
            op.execute(
                f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} "
                f"FOR EACH ROW {_BUMP} AND NOT ({same})"
            )


def downgrade() -> None:
    dialect = _dialect()
    for table in COLUMNS:
        for name in sorted(trigger_names(dialect, table)):
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    op.drop_table("sending_generation")
