"""Initial schema: users, user_networks, global_networks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_NAME = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")
_NET = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")


def _created() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=True),
        sa.Column("backend", sa.String(16), nullable=False, server_default="hash"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        _created(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "user_networks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_user_networks_user"),
            nullable=False,
        ),
        sa.Column("network", _NET, nullable=False),
        sa.Column("services", sa.String(255), nullable=True),
        sa.Column("comment", sa.String(255), nullable=True),
        _created(),
        sa.UniqueConstraint("user_id", "network", name="uq_user_networks_user_network"),
    )
    op.create_index("ix_user_networks_user_id", "user_networks", ["user_id"])
    op.create_table(
        "global_networks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("network", _NET, nullable=False),
        sa.Column("services", sa.String(255), nullable=True),
        sa.Column("comment", sa.String(255), nullable=True),
        _created(),
        sa.UniqueConstraint("network", name="uq_global_networks_network"),
    )


def downgrade() -> None:
    op.drop_table("global_networks")
    op.drop_index("ix_user_networks_user_id", table_name="user_networks")
    op.drop_table("user_networks")
    op.drop_table("users")
