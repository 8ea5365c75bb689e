"""Retired passwords: the old hash of a user whose password changed.

- ``retired_passwords``: ``user_id`` -> users.id (cascade delete), ``hash``
  the old ``{SCHEME}value``, ``retired_at`` when it was replaced,
  ``last_tried_at`` when a failed login last used it (NULL: never). Kept for
  ``[alerts] retired_days`` and purged by the servers' hourly purge.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_passwords",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_retired_passwords_user"),
            nullable=False,
        ),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column(
            "retired_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_tried_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_retired_passwords_user_id", "retired_passwords", ["user_id"])
    op.create_index("ix_retired_passwords_retired_at", "retired_passwords", ["retired_at"])


def downgrade() -> None:
    # its indexes go with it (MariaDB refuses to drop the one its foreign key needs)
    op.drop_table("retired_passwords")
