"""The store's sending operations: each credential's limits and its suspension.

What ``saslnetauth user set --messages-per-hour``, ``user app-password add
--messages-per-hour``, ``user unsuspend`` and ``sending show`` call, and what the
policy server reads (:mod:`saslnetauth.sending.limits`) and writes when a
credential goes over its limits too often. A credential is ``None`` (the main
password: the ``users`` row) or an app password's label (its row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.errors import InvalidInputError, NotFoundError
from saslnetauth.policy.model import normalize_username
from saslnetauth.sending import SENDING_LIMITS
from saslnetauth.store.connect import Database
from saslnetauth.store.schema import app_passwords, sending_generation, users
from saslnetauth.store.times import expiry_value, stored_expiry

__all__ = ["SENDING_VERSION", "CredentialLimits", "SendingAdmin", "SendingRow"]

#: Largest limit that may be stored (a 32-bit column).
MAX_LIMIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class CredentialLimits:
    """One credential's own limits (None: not set) and when it was suspended."""

    limits: dict[str, int | None]
    suspended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendingRow:
    """A user's sending settings: the main password's and each app password's."""

    user: str
    main: CredentialLimits
    apps: dict[str, CredentialLimits]


#: A user's settings and each app password's: one row per app password (one with
#: NULLs when there is none), by the user's stored name; run on the driver's own
#: connection (``raw_rows``: a fraction of SQLAlchemy's per-execution cost), so
#: ``suspended_at`` comes as the driver gives it (:func:`_suspended`).
_COLUMNS = (
    *(users.c[n] for n in SENDING_LIMITS),
    expiry_value(users.c.suspended_at),
    app_passwords.c.label,
    *(app_passwords.c[n] for n in SENDING_LIMITS),
    expiry_value(app_passwords.c.suspended_at),
)
_JOINED = users.outerjoin(app_passwords, app_passwords.c.user_id == users.c.id)
_ROW = sa.select(*_COLUMNS).select_from(_JOINED).where(users.c.name == sa.bindparam("name"))
#: Every user's settings: the same columns after the stored name, a user's rows together.
_ALL = sa.select(users.c.name, *_COLUMNS).select_from(_JOINED).order_by(users.c.id)
_USERS = sa.select(sa.func.count()).select_from(users)
#: The position of the app password's label in a row of :data:`_ROW`.
_APP = len(SENDING_LIMITS) + 1

#: The version of the sending settings: the ``sending_generation`` counter (moved by
#: triggers, migration 0009) and the highest ids, which a TRUNCATE also moves.
SENDING_VERSION = sa.select(
    sa.select(sending_generation.c.generation)
    .where(sending_generation.c.id == sa.literal_column("1"))  # no parameters
    .scalar_subquery(),
    sa.select(sa.func.max(users.c.id)).scalar_subquery(),
    sa.select(sa.func.max(app_passwords.c.id)).scalar_subquery(),
)


def _row(
    name: str, rows: list[Any], same: dict[tuple[Any, ...], CredentialLimits] | None = None
) -> SendingRow:
    """A user's settings from its rows of :data:`_ROW`; ``same``: one value for each
    distinct set of stored values (read only, shared by the users that have it)."""
    apps = {str(r[_APP]): _limits(r, _APP + 1, same) for r in rows if r[_APP] is not None}
    return SendingRow(name, _limits(rows[0], 0, same), apps)


def _limits(
    row: Any, offset: int, same: dict[tuple[Any, ...], CredentialLimits] | None = None
) -> CredentialLimits:
    stored = tuple(row[offset : offset + len(SENDING_LIMITS) + 1])
    if same is not None and (hit := same.get(stored)) is not None:
        return hit
    values = {name: _limit(stored[i]) for i, name in enumerate(SENDING_LIMITS)}
    out = CredentialLimits(values, _suspended(stored[-1]))
    if same is not None:
        same[stored] = out
    return out


def _suspended(value: Any) -> datetime | None:
    """A stored ``suspended_at`` as the driver gave it; a value a script wrote that is
    no time still suspends (fail closed), as of 1970."""
    try:
        ts = stored_expiry(value)
    except ValueError:
        ts = 1.0
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _limit(value: Any) -> int | None:
    """A stored limit; a value a script wrote that is no count is ignored (None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class SendingAdmin(Database):
    """Sending operations, mixed into :class:`~saslnetauth.store.sql.SqlStore`."""

    lowercase: bool

    def sending_row(self, name: str) -> SendingRow | None:
        """The sending settings of ``name``; None for an unknown user (one query)."""
        key = normalize_username(name, lowercase=self.lowercase)
        rows = self.raw_rows(self.compiled(_ROW), (key,) if self.positional else {"name": key})
        if not rows:
            return None
        return _row(key, rows)

    def sending_rows(self, most: int) -> dict[str, SendingRow] | None:
        """Every user's sending settings by stored name, as :meth:`sending_row` gives
        them (two queries); None when there are more than ``most`` users."""
        if int(self.raw_rows(self.compiled(_USERS))[0][0]) > most:
            return None
        found: dict[str, list[Any]] = {}
        for r in self.raw_rows(self.compiled(_ALL)):
            found.setdefault(str(r[0]), []).append(r[1:])
        if len(found) > most:  # users added between the two queries
            return None
        same: dict[tuple[Any, ...], CredentialLimits] = {}  # most users: no limit of their own
        return {name: _row(name, rows, same) for name, rows in found.items()}

    def sending_version(self) -> tuple[Any, ...] | None:
        """The version of every user's sending settings (:data:`SENDING_VERSION`);
        None when ``sending_generation`` has no row 1 (then nothing may be kept)."""
        row = self.raw_rows(self.compiled(SENDING_VERSION))[0]
        return None if row[0] is None else tuple(row)

    def set_sending_limits(
        self, name: str, label: str | None, limits: dict[str, int | None]
    ) -> None:
        """Store the limits given (None: back to the default) for one credential."""
        for field, value in limits.items():
            if field not in SENDING_LIMITS:
                raise InvalidInputError(f"unknown sending limit {field!r}")
            if value is not None and not 0 <= value <= MAX_LIMIT:
                raise InvalidInputError(f"{field}: 0 (no limit) to {MAX_LIMIT}")
        if limits:
            self._update_credential(name, label, dict(limits))

    def suspend(self, name: str, label: str | None) -> bool:
        """Suspend one credential; False when it was suspended already."""
        return self._update_credential(
            name, label, {"suspended_at": datetime.now(UTC)}, only_if_suspended=False
        )

    def unsuspend(self, name: str, label: str | None) -> bool:
        """Lift a suspension; False when the credential was not suspended."""
        return self._update_credential(name, label, {"suspended_at": None}, only_if_suspended=True)

    def _update_credential(
        self,
        name: str,
        label: str | None,
        values: dict[str, Any],
        *,
        only_if_suspended: bool | None = None,
    ) -> bool:
        key = normalize_username(name, lowercase=self.lowercase)
        with self._conn(write=True) as conn:
            uid = _uid(conn, key)
            if label is None:
                table: sa.Table = users
                where = users.c.id == uid
            else:
                table = app_passwords
                where = sa.and_(app_passwords.c.user_id == uid, app_passwords.c.label == label)
                found = conn.execute(sa.select(app_passwords.c.id).where(where)).first()
                if found is None:
                    raise NotFoundError(f"user {key} has no app password {label!r}")
            if only_if_suspended is True:
                where = sa.and_(where, table.c.suspended_at.is_not(None))
            elif only_if_suspended is False:
                where = sa.and_(where, table.c.suspended_at.is_(None))
            res = conn.execute(table.update().where(where).values(**values))
        return bool(res.rowcount)


def _uid(conn: Connection, key: str) -> int:
    uid = conn.execute(sa.select(users.c.id).where(users.c.name == key)).scalar()
    if uid is None:
        raise NotFoundError(f"no such user: {key}")
    return int(uid)
