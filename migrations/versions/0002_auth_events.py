"""auth_events: the record of recent verdicts behind `saslnetauth report`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TEXT = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "auth_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", _TEXT, nullable=True),
        sa.Column("rip", sa.String(64), nullable=True),
        sa.Column("service", sa.String(32), nullable=True),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("credentials_valid", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_auth_events_ts", "auth_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_auth_events_ts", table_name="auth_events")
    op.drop_table("auth_events")
