"""Retired passwords: the old hash of a user whose password changed (table
``retired_passwords``, migration 0005).

When an admin changes a password (``user passwd``, an import) the hash it
replaces is kept for ``[alerts] retired_days`` (PAM users have none: PAM
changes are not seen). A failed login whose password matches one is the
signal of :mod:`saslnetauth.policy.engine` (``reason=retired_password``): a stale
device on the user's own networks, someone holding the old password from
elsewhere. The servers' hourly purge deletes older rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.store.schema import retired_passwords, users

__all__ = [
    "CHECKED",
    "purge_retired",
    "retire_changed",
    "retired_hashes",
    "retired_of_user",
    "retired_tried",
]

#: Retired hashes a failed login is checked against at most (the newest).
CHECKED = 3
#: User ids per IN (...) query.
IN_BATCH = 500


def retire_changed(conn: Connection, new_hashes: Mapping[int, str | None]) -> int:
    """Keep the stored hash of every user of ``new_hashes`` (user id -> the hash
    about to be written) whose password changes; returns how many were kept. Users
    with backend ``pam`` or no hash keep nothing. Call before the update, in its
    transaction."""
    ids = list(new_hashes)
    kept = 0
    now = datetime.now(UTC)  # written by us, not the database: compared with ours
    for start in range(0, len(ids), IN_BATCH):
        chunk = ids[start : start + IN_BATCH]
        query = sa.select(users.c.id, users.c.password_hash, users.c.backend).where(
            users.c.id.in_(chunk)
        )
        rows = [
            {"user_id": uid, "hash": old, "retired_at": now}
            for uid, old, backend in conn.execute(query)
            if old and backend == "hash" and old != new_hashes[uid]
        ]
        if rows:
            conn.execute(retired_passwords.insert(), rows)
            kept += len(rows)
    return kept


def _since(days: int, now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


def retired_hashes(
    conn: Connection, user_id: int, days: int, now: datetime | None = None
) -> list[tuple[int, str]]:
    """(row id, hash) of the user's passwords retired within ``days``, newest first,
    at most :data:`CHECKED`."""
    query = (
        sa.select(retired_passwords.c.id, retired_passwords.c.hash)
        .where(retired_passwords.c.user_id == user_id)
        .where(retired_passwords.c.retired_at >= _since(days, now))
        .order_by(retired_passwords.c.retired_at.desc(), retired_passwords.c.id.desc())
        .limit(CHECKED)
    )
    return [(int(rid), str(h)) for rid, h in conn.execute(query)]


def retired_tried(conn: Connection, row_id: int, when: datetime | None = None) -> None:
    """A failed login used retired password ``row_id`` (``last_tried_at``)."""
    conn.execute(
        retired_passwords.update()
        .where(retired_passwords.c.id == row_id)
        .values(last_tried_at=when or datetime.now(UTC))
    )


def retired_of_user(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    """When each of the user's kept passwords was retired and last tried (``user show``),
    newest first."""
    query = (
        sa.select(retired_passwords.c.retired_at, retired_passwords.c.last_tried_at)
        .where(retired_passwords.c.user_id == user_id)
        .order_by(retired_passwords.c.retired_at.desc(), retired_passwords.c.id.desc())
    )
    return [
        {"retired_at": _aware(retired), "last_tried_at": _aware(tried)}
        for retired, tried in conn.execute(query)
    ]


def purge_retired(conn: Connection, days: int, now: datetime | None = None) -> int:
    """Delete the passwords retired more than ``days`` ago; returns how many."""
    res = conn.execute(
        retired_passwords.delete().where(retired_passwords.c.retired_at < _since(days, now))
    )
    return int(res.rowcount or 0)


def _aware(value: object) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
