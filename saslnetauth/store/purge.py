"""Deleting expired network grants once their grace period is over.

An expired row never matches (:mod:`saslnetauth.policy.rules.netrules`), so purging is
housekeeping, not security: ``[serve] expired_keep_days`` after its
``expires_at`` a row of ``user_networks`` or ``global_networks`` is deleted,
by ``saslnetauth serve`` every hour (:class:`ExpiredPurger`, in the main
process only) or by ``saslnetauth db purge-expired``. The same purger deletes
the retired passwords older than ``[alerts] retired_days``
(:mod:`saslnetauth.store.retired`). Each purge that
removes something writes one log line naming the rows. Rows whose
``expires_at`` is not a time are left alone: they are invalid rows, listed
as such for the admin to fix, and never match either.

The same turn forgets the places of the new-location alerts
(``user_locations``, :mod:`saslnetauth.store.locations`) unseen for ``[alerts]
location_memory_days``, and those beyond ``location_max_per_user`` of a user
(the least recently seen first): :func:`purge_locations`; and the expired
webmail sessions (:func:`saslnetauth.store.webmail.purge_sessions`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from saslnetauth.logfmt import kv
from saslnetauth.policy.rules.expiry import format_utc
from saslnetauth.store.connect import Database
from saslnetauth.store.retired import purge_retired
from saslnetauth.store.schema import global_networks, user_locations, user_networks, users
from saslnetauth.store.times import expiry_value, stored_expiry

if TYPE_CHECKING:
    from saslnetauth.settings import AlertsConfig

__all__ = ["PURGE_SECONDS", "ExpiredPurger", "Purged", "purge_expired", "purge_locations"]

log = logging.getLogger("saslnetauth.store")

#: How often the server purges.
PURGE_SECONDS = 3600.0
#: Rows named in the log line at most (the count is always complete).
NAMED = 50

_USER_EXPIRING = (
    sa.select(
        user_networks.c.id,
        users.c.name,
        user_networks.c.network,
        expiry_value(user_networks.c.expires_at),
    )
    .select_from(user_networks.join(users, users.c.id == user_networks.c.user_id))
    .where(user_networks.c.expires_at.is_not(None))
    .order_by(user_networks.c.id)
)
_GLOBAL_EXPIRING = (
    sa.select(
        global_networks.c.id,
        global_networks.c.network,
        expiry_value(global_networks.c.expires_at),
    )
    .where(global_networks.c.expires_at.is_not(None))
    .order_by(global_networks.c.id)
)


@dataclass
class Purged:
    """What a purge removed (or would remove): ``user NAME NET until T`` texts."""

    user_rows: list[str] = field(default_factory=list)
    global_rows: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.user_rows) + len(self.global_rows)

    def names(self) -> str:
        rows = self.user_rows + self.global_rows
        text = ", ".join(rows[:NAMED])
        return text + (f", ... and {len(rows) - NAMED} more" if len(rows) > NAMED else "")


def purge_expired(db: Database, keep_days: float, now: float, *, dry_run: bool = False) -> Purged:
    """Delete (unless ``dry_run``) the grants expired more than ``keep_days`` before
    ``now``, in one transaction; log one line when any went."""
    cutoff = now - keep_days * 86400
    purged = Purged()
    user_ids: list[int] = []
    global_ids: list[int] = []
    with db._conn(write=not dry_run) as conn:
        for nid, name, network, raw in conn.execute(_USER_EXPIRING):
            ends = _expiry(raw)
            if ends is not None and ends <= cutoff:
                user_ids.append(nid)
                purged.user_rows.append(f"user {name} {network} until {format_utc(ends)}")
        for nid, network, raw in conn.execute(_GLOBAL_EXPIRING):
            ends = _expiry(raw)
            if ends is not None and ends <= cutoff:
                global_ids.append(nid)
                purged.global_rows.append(f"global {network} until {format_utc(ends)}")
        if not dry_run:
            for start in range(0, len(user_ids), 500):
                chunk = user_ids[start : start + 500]
                conn.execute(user_networks.delete().where(user_networks.c.id.in_(chunk)))
            for start in range(0, len(global_ids), 500):
                chunk = global_ids[start : start + 500]
                conn.execute(global_networks.delete().where(global_networks.c.id.in_(chunk)))
    if purged.count and not dry_run:
        log.info(
            "%s",
            kv(
                "expired networks purged",
                user_networks=len(purged.user_rows),
                global_networks=len(purged.global_rows),
                keep_days=keep_days,
                removed=purged.names(),
            ),
        )
    return purged


def purge_locations(db: Database, memory_days: int, max_per_user: int, now: float) -> int:
    """Delete the places unseen for ``memory_days`` and, per user, those beyond the
    ``max_per_user`` most recently seen; the number deleted (one log line when any)."""
    loc = user_locations.c
    cutoff = datetime.fromtimestamp(now - memory_days * 86400, UTC)
    with db._conn(write=True) as conn:
        removed = conn.execute(user_locations.delete().where(loc.last_seen < cutoff)).rowcount
        crowded = conn.execute(
            sa.select(loc.user_id).group_by(loc.user_id).having(sa.func.count() > max_per_user)
        ).scalars()
        for uid in list(crowded):
            extra = conn.execute(
                sa.select(loc.id)
                .where(loc.user_id == uid)
                .order_by(loc.last_seen.desc(), loc.id.desc())
                .offset(max_per_user)
            ).scalars()
            ids = list(extra)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                removed += conn.execute(user_locations.delete().where(loc.id.in_(chunk))).rowcount
    if removed:
        log.info(
            "%s",
            kv("login places forgotten", rows=removed, memory_days=memory_days, most=max_per_user),
        )
    return int(removed)


def _expiry(raw: object) -> float | None:
    """The expiry of a row, or None for one whose expires_at is not a time (kept)."""
    try:
        return stored_expiry(raw)
    except ValueError:
        return None


class ExpiredPurger:
    """Purge at start and every :data:`PURGE_SECONDS` on a thread of its own; errors are
    logged and retried at the next turn. ``keep_days`` may be changed (SIGHUP)."""

    def __init__(
        self,
        db: Database,
        keep_days: int,
        *,
        interval: float = PURGE_SECONDS,
        alerts: AlertsConfig | None = None,
    ) -> None:
        self.db = db
        self.keep_days = keep_days
        #: location_memory_days and location_max_per_user (None: places are not purged)
        self.alerts = alerts
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saslnetauth-purge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                purge_expired(self.db, self.keep_days, time.time())
            except Exception as exc:  # housekeeping never stops the server
                log.warning("%s", kv("purge of expired networks failed", error=str(exc)[:200]))
            alerts = self.alerts
            try:
                if alerts is not None:
                    days, most = alerts.location_memory_days, alerts.location_max_per_user
                    purge_locations(self.db, days, most, time.time())
            except Exception as exc:
                log.warning("%s", kv("purge of login places failed", error=str(exc)[:200]))
            try:
                from saslnetauth.store.webmail import purge_sessions

                purge_sessions(self.db, time.time())
            except Exception as exc:
                log.warning("%s", kv("purge of webmail sessions failed", error=str(exc)[:200]))
            if alerts is not None:
                try:
                    self._purge_retired(alerts.retired_days)
                except Exception as exc:
                    log.warning("%s", kv("purge of retired passwords failed", error=str(exc)[:200]))
            if self._stop.wait(self.interval):
                return

    def _purge_retired(self, days: int) -> None:
        with self.db._conn(write=True) as conn:
            gone = purge_retired(conn, days)
        if gone:
            log.info("%s", kv("retired passwords purged", rows=gone, retired_days=days))

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
