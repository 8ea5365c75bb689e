"""The memory of new-location alerts (``user_locations``): read per allowed login,
written in the background.

After an OK the engine calls :meth:`LocationMemory.note`: it locates the
address (the GeoIP databases, in memory), reads what the user has seen
within ``location_memory_days`` (one indexed query, at most
``location_max_per_user`` rows), decides with :func:`saslnetauth.policy.locations.novel`
and returns the decision with ``new_location`` set when a fact is new. The
login never waits for a write: new facts, and the ``last_seen`` of known ones
(at most once per :data:`TOUCH_SECONDS` each), are queued and written by a
thread, at once when something is new (so that another worker process or
another server sharing the database sees it within milliseconds) and else
once per :data:`FLUSH_SECONDS`. Until written they count as seen in this
process. A login whose facts this process has just read or queued for the same
user and scope (within :data:`KNOWN_SECONDS`, at most :data:`KNOWN_MAX` sets
remembered) is not new and reads nothing: so a place an admin deletes from
the table alerts again at most :data:`KNOWN_SECONDS` later, and its
``last_seen`` is touched at most that much later than it would be. Two
servers that see the same new place in the same instant both alert; their
rows meet the unique key and the second insert is ignored.
Any database error loses a read (the login is not alerted) or a batch (logged),
never a login.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from saslnetauth.errors import AlreadyExistsError
from saslnetauth.logfmt import kv
from saslnetauth.policy.locations import KINDS, MAIN_SCOPE, Place, Seen, novel, places_of
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import Locate
from saslnetauth.policy.rules.netterms import Geo
from saslnetauth.policy.verdict import Decision
from saslnetauth.store.schema import user_locations
from saslnetauth.store.times import db_time, stored_expiry

if TYPE_CHECKING:
    from saslnetauth.settings import AlertsConfig
    from saslnetauth.store.connect import Database

__all__ = ["LocationMemory", "enabled_kinds"]

log = logging.getLogger("saslnetauth.record")

FLUSH_SECONDS = 1.0
#: A known fact's last_seen is written again at most this often.
TOUCH_SECONDS = 3600.0
#: Facts waiting to be written at most; more are dropped until the next write.
MAX_PENDING = 100_000
#: How long a (user, scope, facts) set just read or queued is known without a read.
KNOWN_SECONDS = 60.0
#: Such sets remembered at most (the soonest to expire is forgotten first).
KNOWN_MAX = 50_000

_L = user_locations.c
#: The user's places, most recently seen first (those older than the memory, not yet
#: purged, are dropped as they are read); run on the driver's connection, like the
#: user lookup (store/sql.py), with last_seen as the driver gives it.
_KNOWN = (
    sa.select(_L.scope, _L.kind, _L.value, _L.last_seen)
    .where(_L.user_id == sa.bindparam("uid"))
    .order_by(_L.last_seen.desc())
)
_TOUCH = (
    user_locations.update()
    .where(
        _L.user_id == sa.bindparam("uid"),
        _L.scope == sa.bindparam("sc"),
        _L.kind == sa.bindparam("k"),
        _L.value == sa.bindparam("v"),
        _L.last_seen < sa.bindparam("ts"),
    )
    .values(last_seen=sa.bindparam("ts"))
)


class _Key(NamedTuple):
    user_id: int
    scope: int
    kind: str
    value: str


def enabled_kinds(cfg: AlertsConfig) -> tuple[str, ...]:
    """The kinds of fact switched on (none: no memory at all)."""
    return tuple(k for k in KINDS if getattr(cfg, f"new_location_{k}"))


class LocationMemory:
    """Decides whether an allowed login comes from a new place; remembers places."""

    def __init__(
        self,
        db: Database,
        kinds: Iterable[str],
        *,
        memory_days: int,
        max_per_user: int,
        locate: Locate | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        known_seconds: float = KNOWN_SECONDS,
        known_max: int = KNOWN_MAX,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.kinds = tuple(kinds)
        self.memory_days = memory_days
        self.max_per_user = max_per_user
        self.locate = locate
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.known_seconds = known_seconds
        self.known_max = known_max
        self._monotonic = monotonic
        #: (user, scope, facts) -> monotonic time until which they are known: no read
        self._fresh: dict[tuple[int, int, tuple[Place, ...]], float] = {}
        #: queued and being written: (user, scope, kind, value) -> (app password id, when)
        self._pending: dict[_Key, tuple[int | None, float]] = {}
        self._writing: dict[_Key, tuple[int | None, float]] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saslnetauth-places", daemon=True)
        self._thread.start()

    # -- the login's side ----------------------------------------------------------

    def note(self, decision: Decision, user: UserRecord, login: Login) -> Decision:
        """``decision`` (an OK of ``user``) with ``new_location`` (and the country and
        ASN of a new place) set when the place is new; never raises."""
        try:
            return self._note(decision, user, login, time.time())
        except Exception as exc:  # never a login's problem
            log.warning("%s", kv("location memory not consulted", user=user.name, error=str(exc)))
            return decision

    def _note(self, decision: Decision, user: UserRecord, login: Login, now: float) -> Decision:
        addr = login.address
        geo = self.locate(addr) if self.locate is not None and addr is not None else Geo()
        places = places_of(addr, geo, self.kinds)
        if not places or user.id <= 0:  # nothing known of it, or a PAM user not listed
            return decision
        app = next((a for a in user.app_passwords if a.label == decision.credential), None)
        scope = app.id if app is not None and decision.credential is not None else MAIN_SCOPE
        fresh = (user.id, scope, places)
        if self._is_fresh(fresh):
            return decision  # read or queued moments ago: known (not new)
        seen = self._known(user.id, now)
        new = novel(places, (s for s, _ in seen), scope)
        stamps = {(s.kind, s.value): t for s, t in seen if s.scope == scope}
        app_id = app.id if app is not None and scope else None
        self._queue(user.id, scope, app_id, places, stamps, now, urgent=bool(new))
        self._remember(fresh)
        if not new:
            return decision
        return replace(decision, new_location=",".join(new), country=geo.country, asn=geo.asn)

    def _is_fresh(self, key: tuple[int, int, tuple[Place, ...]]) -> bool:
        until = self._fresh.get(key)
        return until is not None and until > self._monotonic()

    def _remember(self, key: tuple[int, int, tuple[Place, ...]]) -> None:
        """``key``'s facts are known (read, or queued) for the next ``known_seconds``."""
        if self.known_seconds <= 0 or self.known_max <= 0:
            return
        until = self._monotonic() + self.known_seconds
        with self._lock:
            fresh = self._fresh
            fresh.pop(key, None)  # to the end: the order is that of expiry
            while len(fresh) >= self.known_max:
                del fresh[next(iter(fresh))]
            fresh[key] = until

    def _known(self, user_id: int, now: float) -> list[tuple[Seen, float]]:
        """What the user has seen within the memory, with when it was last seen:
        the database's rows and this process's unwritten ones."""
        # the unwritten ones first: one written meanwhile is then in the database
        with self._lock:
            seen = [
                (Seen(key.scope, key.kind, key.value), when)
                for queue in (self._writing, self._pending)
                for key, (_, when) in queue.items()
                if key.user_id == user_id
            ]
        db = self.db
        params = (user_id,) if db.positional else {"uid": user_id}
        cutoff = now - self.memory_days * 86400
        # the bound is an integer of the configuration, written into the text (the same
        # LIMIT n on SQLite, PostgreSQL and MariaDB)
        sql = f"{db.compiled(_KNOWN)} LIMIT {int(self.max_per_user)}"
        for sc, k, v, ts in db.raw_rows(sql, params):
            when = stored_expiry(ts) or 0.0
            if when >= cutoff:
                seen.append((Seen(int(sc), str(k), str(v)), when))
        return seen

    def _queue(
        self,
        user_id: int,
        scope: int,
        app_id: int | None,
        places: tuple[Place, ...],
        stamps: dict[tuple[str, str], float],
        now: float,
        *,
        urgent: bool,
    ) -> None:
        """Queue the facts that are new for the scope, and the known ones last written
        more than TOUCH_SECONDS ago."""
        wake = urgent
        with self._lock:
            for place in places:
                last = stamps.get(place)
                if last is not None and now - last < TOUCH_SECONDS:
                    continue
                key = _Key(user_id, scope, place.kind, place.value)
                if len(self._pending) >= MAX_PENDING and key not in self._pending:
                    self.dropped += 1
                    continue
                self._pending[key] = (app_id, now)
                wake = wake or last is None
        if wake:
            self._wake.set()

    # -- the writer ----------------------------------------------------------------

    def flush(self) -> None:
        """Write what is queued; returns once it is written (or lost), also when
        another thread's flush was under way."""
        with self._flushing:
            with self._lock:
                if not self._pending:
                    return
                self._writing, self._pending = self._pending, {}
                batch = self._writing
            try:
                self._write(batch)
            except Exception as exc:  # never a login's problem
                log.warning("%s", kv("login places lost", rows=len(batch), error=str(exc)[:200]))
            finally:
                with self._lock:
                    self._writing = {}

    def _write(self, batch: dict[_Key, tuple[int | None, float]]) -> None:
        """Move last_seen forward (never back); insert what no row holds yet (a row that
        another process inserted meanwhile is left as it is)."""
        dialect = self.db.dialect
        missing: list[tuple[_Key, int | None, float]] = []
        with self.db._conn(write=True) as conn:
            for key, (app_id, when) in batch.items():
                params = {"uid": key.user_id, "sc": key.scope, "k": key.kind, "v": key.value}
                res = conn.execute(_TOUCH, {**params, "ts": db_time(when, dialect)})
                if res.rowcount == 0:
                    missing.append((key, app_id, when))
        for key, app_id, when in missing:
            ts = db_time(when, dialect)
            row = {"user_id": key.user_id, "scope": key.scope, "kind": key.kind}
            row.update(value=key.value, app_password_id=app_id, first_seen=ts, last_seen=ts)
            try:
                with self.db._conn(write=True) as conn:
                    conn.execute(user_locations.insert().values(**row))
            except AlreadyExistsError:
                continue  # there already (newer), or the user or app password is gone

    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending and stop the writer."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
            if self._stop.is_set():
                self.flush()
                return
