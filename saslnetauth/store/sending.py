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
from saslnetauth.store.schema import app_passwords, users

__all__ = ["CredentialLimits", "SendingAdmin", "SendingRow"]

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


def _limits(row: Any, offset: int) -> CredentialLimits:
    values = {name: _limit(row[offset + i]) for i, name in enumerate(SENDING_LIMITS)}
    return CredentialLimits(values, row[offset + len(SENDING_LIMITS)])


def _limit(value: Any) -> int | None:
    """A stored limit; a value a script wrote that is no count is ignored (None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class SendingAdmin(Database):
    """Sending operations, mixed into :class:`~saslnetauth.store.sql.SqlStore`."""

    lowercase: bool

    def sending_row(self, name: str) -> SendingRow | None:
        """The sending settings of ``name``; None for an unknown user."""
        key = normalize_username(name, lowercase=self.lowercase)
        u = [users.c[n] for n in SENDING_LIMITS]
        a = [app_passwords.c[n] for n in SENDING_LIMITS]
        with self._conn() as conn:
            row = conn.execute(
                sa.select(users.c.id, *u, users.c.suspended_at).where(users.c.name == key)
            ).first()
            if row is None:
                return None
            apps = conn.execute(
                sa.select(app_passwords.c.label, *a, app_passwords.c.suspended_at).where(
                    app_passwords.c.user_id == row[0]
                )
            ).all()
        return SendingRow(key, _limits(row, 1), {str(r[0]): _limits(r, 1) for r in apps})

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
