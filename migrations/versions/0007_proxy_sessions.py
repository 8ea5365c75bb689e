"""Trusted proxies and webmail sessions (docs/webmail.md).

- ``auth_events.proxy``: the trusted proxy a login came through (NULL: direct).
- ``webmail_sessions``: the sessions an allowed forwarded login opened, so that
  the same proxy without a client address admits the same user and credential
  (a webmail's SMTP AUTH) while one is live; ``scope`` is the app password's id
  or 0 for the main password, so that the unique key never holds a NULL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("auth_events", sa.Column("proxy", sa.String(64), nullable=True))
    op.create_table(
        "webmail_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_webmail_sessions_user"),
            nullable=False,
        ),
        sa.Column(
            "app_password_id",
            sa.Integer,
            sa.ForeignKey("app_passwords.id", ondelete="CASCADE", name="fk_webmail_sessions_app"),
            nullable=True,
        ),
        sa.Column("scope", sa.Integer, nullable=False, server_default="0"),
        sa.Column("proxy", sa.String(64), nullable=False),
        sa.Column("rip", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.UniqueConstraint("user_id", "scope", "proxy", name="uq_webmail_sessions_key"),
    )
    op.create_index("ix_webmail_sessions_expires", "webmail_sessions", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_webmail_sessions_expires", table_name="webmail_sessions")
    op.drop_table("webmail_sessions")
    op.drop_column("auth_events", "proxy")
