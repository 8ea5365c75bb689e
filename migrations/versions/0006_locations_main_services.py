"""Where the main password may log in, and where each user logged in from.

- ``users.main_password_services``: ``all``, ``none`` or services such as
  ``smtp,submission``; NULL (every existing user) keeps the configured
  default, ``[passwords] main_password_services``.
- ``user_locations``: the networks (/24, /48), countries and autonomous
  systems each user and each app password logged in from, for the
  new-location alerts; ``scope`` is the app password's id or 0 for the main
  password, so that the unique key never holds a NULL. The unique key's
  index (user_id first) serves the per-login read, ``last_seen``'s the purge.

Adding a column keeps ``users`` in place; the downgrade drops the table and
the column (SQLite 3.35 or newer drops a column in place).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NET = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("users", sa.Column("main_password_services", sa.String(255), nullable=True))
    op.create_table(
        "user_locations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_user_locations_user"),
            nullable=False,
        ),
        sa.Column(
            "app_password_id",
            sa.Integer,
            sa.ForeignKey("app_passwords.id", ondelete="CASCADE", name="fk_user_locations_app"),
            nullable=True,
        ),
        sa.Column("scope", sa.Integer, nullable=False, server_default="0"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", _NET, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "scope", "kind", "value", name="uq_user_locations_place"),
    )
    op.create_index("ix_user_locations_last_seen", "user_locations", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_user_locations_last_seen", table_name="user_locations")
    op.drop_table("user_locations")
    op.drop_column("users", "main_password_services")
