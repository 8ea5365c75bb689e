"""Sending limits and suspensions per user and per app password.

On ``users`` and ``app_passwords`` alike:

- ``messages_per_hour``, ``recipients_per_hour``, ``messages_per_day``,
  ``recipients_per_day``: the credential's own limit (NULL: ``[sending]``'s
  default; for an app password, the user's own limit first); 0 = no limit.
- ``suspended_at``: when the credential was suspended for going over its
  limits ``[sending] suspend_after`` times (NULL: not suspended); a suspended
  credential's next AUTH fails like a wrong password (reason ``suspended``).

Adding nullable columns keeps both tables in place; the downgrade drops them
(SQLite 3.35 or newer drops a column in place).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LIMITS = ("messages_per_hour", "recipients_per_hour", "messages_per_day", "recipients_per_day")
TABLES = ("users", "app_passwords")


def upgrade() -> None:
    for table in TABLES:
        for name in LIMITS:
            op.add_column(table, sa.Column(name, sa.Integer, nullable=True))
        op.add_column(table, sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "suspended_at")
        for name in reversed(LIMITS):
            op.drop_column(table, name)
