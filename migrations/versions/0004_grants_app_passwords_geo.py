"""Expiring grants, app passwords, and the country/ASN of recorded verdicts.

- ``user_networks.expires_at`` and ``global_networks.expires_at``: NULL for a
  row that never expires; a row whose time has passed never matches.
- ``app_passwords``: per-device credentials of a user (label, a public token
  identifier, a hash of the secret, optional services and expiry, last use);
  ``app_password_networks``: the networks each one may log in from.
- ``auth_events.credential`` (the app password's label, NULL for the main
  password), ``auth_events.country`` and ``auth_events.asn`` (where the
  address was, when the GeoIP databases knew it).

Adding columns keeps every table in place (no copy), so the triggers of 0003
on ``global_networks`` stay; the downgrade drops the columns again (SQLite
3.35 or newer drops a column in place).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LABEL = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_NET = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_TOKEN = sa.String(32).with_variant(mysql.VARCHAR(32, collation="utf8mb4_bin"), "mysql", "mariadb")


def _now_column(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.add_column(
        "user_networks", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "global_networks", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("auth_events", sa.Column("credential", _LABEL, nullable=True))
    op.add_column("auth_events", sa.Column("country", sa.String(2), nullable=True))
    op.add_column("auth_events", sa.Column("asn", sa.BigInteger, nullable=True))
    op.create_table(
        "app_passwords",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_app_passwords_user"),
            nullable=False,
        ),
        sa.Column("label", _LABEL, nullable=False),
        sa.Column("token_id", _TOKEN, nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("services", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        _now_column("created_at"),
        sa.UniqueConstraint("user_id", "label", name="uq_app_passwords_user_label"),
        sa.UniqueConstraint("token_id", name="uq_app_passwords_token_id"),
    )
    op.create_index("ix_app_passwords_user_id", "app_passwords", ["user_id"])
    op.create_table(
        "app_password_networks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "app_password_id",
            sa.Integer,
            sa.ForeignKey(
                "app_passwords.id", ondelete="CASCADE", name="fk_app_password_networks_app"
            ),
            nullable=False,
        ),
        sa.Column("network", _NET, nullable=False),
        _now_column("created_at"),
        sa.UniqueConstraint(
            "app_password_id", "network", name="uq_app_password_networks_app_network"
        ),
    )
    op.create_index(
        "ix_app_password_networks_app_password_id", "app_password_networks", ["app_password_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_app_password_networks_app_password_id", table_name="app_password_networks")
    op.drop_table("app_password_networks")
    op.drop_index("ix_app_passwords_user_id", table_name="app_passwords")
    op.drop_table("app_passwords")
    op.drop_column("auth_events", "asn")
    op.drop_column("auth_events", "country")
    op.drop_column("auth_events", "credential")
    op.drop_column("global_networks", "expires_at")
    op.drop_column("user_networks", "expires_at")
