"""The rows that stop admitting logins at a time: network grants (a user's and
global) and app passwords with an ``expires_at``, read in one query for the
server's revoke watcher (:mod:`saslnetauth.serve.revokewatch`).

Only rows with an expiry are read (the temporary ones: usually a handful). The
time is compared here, not in SQL, because a row written by an admin's script
may hold it as text or a number (:func:`saslnetauth.store.times.stored_expiry`);
a row whose ``expires_at`` is not a time never matches and is skipped.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

from saslnetauth.store.connect import Database
from saslnetauth.store.schema import app_passwords, global_networks, user_networks, users
from saslnetauth.store.times import expiry_value, stored_expiry

__all__ = ["Expiring", "expiring_rows"]


class Expiring(NamedTuple):
    """``kind`` ``network`` (a user's grant), ``app_password`` or ``global``; ``user``
    ("" for a global network); ``what`` the network or the app password's label;
    ``ends`` the UNIX time it expires."""

    kind: str
    user: str
    what: str
    ends: float


def _of_users(kind: str, table: sa.Table, what: sa.Column[Any]) -> sa.Select[Any]:
    """The rows of ``table`` (a user's) that have an expiry, with their user's name."""
    return (
        sa.select(
            sa.literal(kind).label("kind"),
            users.c.name,
            what.label("what"),
            expiry_value(table.c.expires_at).label("raw"),
        )
        .select_from(table.join(users, users.c.id == table.c.user_id))
        .where(table.c.expires_at.is_not(None))
    )


_EXPIRING = sa.union_all(
    _of_users("network", user_networks, user_networks.c.network),
    _of_users("app_password", app_passwords, app_passwords.c.label),
    sa.select(
        sa.literal("global").label("kind"),
        sa.literal("").label("name"),
        global_networks.c.network.label("what"),
        expiry_value(global_networks.c.expires_at).label("raw"),
    ).where(global_networks.c.expires_at.is_not(None)),
)


def expiring_rows(db: Database) -> list[Expiring]:
    """Every row with a valid expiry (see the module's text)."""
    out: list[Expiring] = []
    with db._conn() as conn:
        for kind, user, what, raw in conn.execute(_EXPIRING):
            try:
                ends = stored_expiry(raw)
            except ValueError:
                continue
            if ends is not None:
                out.append(Expiring(str(kind), str(user or ""), str(what), ends))
    return out
