"""The webmail sessions (``webmail_sessions``, :mod:`saslnetauth.policy.binding`) in the
database: every worker and process of a server, checkpassword, the Lua bridge and
the policy endpoint see the same ones, and a restart keeps them.

Written synchronously (a webmail's SMTP AUTH follows its IMAP login within
milliseconds, possibly in another process). The table stays small: one row per
(user, credential, proxy), replaced on renewal; expired rows are never read, and
are deleted with the user's next renewal and by the server's hourly purge
(:func:`purge_sessions`). A user or app password deleted takes its rows with it
(foreign keys, cascade).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from saslnetauth.errors import AlreadyExistsError
from saslnetauth.logfmt import kv
from saslnetauth.policy.binding import Binding
from saslnetauth.store.schema import webmail_sessions

if TYPE_CHECKING:
    from saslnetauth.store.connect import Database

__all__ = ["WebmailSessions", "purge_sessions"]

log = logging.getLogger("saslnetauth.record")

_W = webmail_sessions.c
_FIND = sa.select(_W.rip, _W.fingerprint, _W.expires).where(
    _W.user_id == sa.bindparam("uid"),
    _W.scope == sa.bindparam("sc"),
    _W.proxy == sa.bindparam("px"),
    _W.expires > sa.bindparam("now"),
)


class WebmailSessions:
    """:class:`saslnetauth.policy.binding.Bindings` on the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find(self, user_id: int, scope: int, proxy: str, now: float) -> Binding | None:
        """The live session, or None (BackendError when the database fails)."""
        db = self.db
        values = {"uid": user_id, "sc": scope, "px": proxy, "now": now}
        params = tuple(values.values()) if db.positional else values
        rows = db.raw_rows(db.compiled(_FIND), params)
        if not rows:
            return None
        rip, fp, expires = rows[0]
        return Binding(user_id, scope, proxy, str(rip), str(fp), float(expires))

    def renew(self, binding: Binding) -> None:
        """Open or renew the session (one transaction; the user's expired rows go)."""
        b = binding
        key = (_W.user_id == b.user_id) & (_W.scope == b.scope) & (_W.proxy == b.proxy)
        row = {
            "user_id": b.user_id,
            "app_password_id": b.scope or None,
            "scope": b.scope,
            "proxy": b.proxy,
            "rip": b.rip,
            "fingerprint": b.fingerprint,
            "expires": b.expires,
        }
        for _ in range(2):  # another process may insert the same key in between
            try:
                with self.db._conn(write=True) as conn:
                    stale = (_W.user_id == b.user_id) & (_W.expires <= time.time())
                    conn.execute(webmail_sessions.delete().where(key | stale))
                    conn.execute(webmail_sessions.insert().values(**row))
                return
            except AlreadyExistsError:
                continue

    def end(self, user_id: int, proxy: str) -> int:
        """End every session of the user through ``proxy``; how many there were."""
        with self.db._conn(write=True) as conn:
            res = conn.execute(
                webmail_sessions.delete().where((_W.user_id == user_id) & (_W.proxy == proxy))
            )
        return int(res.rowcount or 0)

    def end_all(self, user_id: int) -> int:
        """End every session of the user (``user disable``, a password change)."""
        with self.db._conn(write=True) as conn:
            res = conn.execute(webmail_sessions.delete().where(_W.user_id == user_id))
        return int(res.rowcount or 0)

    def live(self, now: float) -> list[tuple[int, int, str, str, float]]:
        """(user id, scope, proxy, rip, expires) of the live sessions (``check``)."""
        with self.db._conn() as conn:
            rows = conn.execute(
                sa.select(_W.user_id, _W.scope, _W.proxy, _W.rip, _W.expires).where(
                    _W.expires > now
                )
            ).all()
        return [(int(r[0]), int(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]


def purge_sessions(db: Database, now: float) -> int:
    """Delete the expired sessions; the number deleted (one log line when any)."""
    with db._conn(write=True) as conn:
        removed = int(conn.execute(webmail_sessions.delete().where(_W.expires <= now)).rowcount)
    if removed:
        log.info("%s", kv("webmail sessions expired", rows=removed))
    return removed
