"""The store's app password operations: create, delete, list, and note their last use.

What ``saslnetauth user app-password ...`` calls, and the writer of
``last_used_at`` (:mod:`saslnetauth.store.lastused`); every write is one
transaction. The per-login read is in :meth:`saslnetauth.store.sql.SqlStore.get_user`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.errors import AlreadyExistsError, NotFoundError
from saslnetauth.policy.model import AppPasswordRecord, normalize_username
from saslnetauth.policy.rules.netrules import NetworkRule, format_services
from saslnetauth.store.approws import APP_PASSWORD_DETAILS, AppRowCache, detailed_app_passwords
from saslnetauth.store.connect import Database
from saslnetauth.store.rows import dedupe
from saslnetauth.store.schema import app_password_networks, app_passwords, users
from saslnetauth.store.times import db_time

__all__ = ["AppPasswordAdmin", "NewToken"]

#: Draws a new token: (text shown once, token_id, secret_hash).
NewToken = Callable[[], tuple[str, str, str]]
#: Fresh tokens tried when the drawn identifier is taken (31.7 bits: rare).
TOKEN_TRIES = 8

_AP = app_passwords.c
_TOUCH = (
    app_passwords.update()
    .where(
        _AP.id == sa.bindparam("aid"),
        sa.or_(_AP.last_used_at.is_(None), _AP.last_used_at < sa.bindparam("ts")),
    )
    .values(last_used_at=sa.bindparam("ts"))
)


class _LabelTaken(Exception):
    """The user has an app password of that label (rolls the transaction back)."""


class AppPasswordAdmin(Database):
    """App password operations, mixed into :class:`~saslnetauth.store.sql.SqlStore`."""

    lowercase: bool

    def _key(self, name: str) -> str:
        return normalize_username(name, lowercase=self.lowercase)

    def _uid(self, conn: Connection, key: str) -> int:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == key)).scalar()
        if uid is None:
            raise NotFoundError(f"no such user: {key}")
        return int(uid)

    def add_app_password(
        self,
        name: str,
        label: str,
        new_token: NewToken,
        *,
        services: frozenset[str] | None = None,
        networks: Sequence[NetworkRule] = (),
        expires: float | None = None,
    ) -> str:
        """Create app password ``label`` of user ``name``, ending at UNIX time ``expires``
        (None: never); returns the token (to be shown once). A drawn identifier that is
        taken is drawn again."""
        key = self._key(name)
        rules = dedupe(networks)
        for _ in range(TOKEN_TRIES):
            token, token_id, secret_hash = new_token()
            try:
                with self._conn(write=True) as conn:
                    uid = self._uid(conn, key)
                    taken = conn.execute(
                        sa.select(_AP.id).where(_AP.user_id == uid, _AP.label == label)
                    ).first()
                    if taken is not None:
                        raise _LabelTaken
                    res = conn.execute(
                        app_passwords.insert().values(
                            user_id=uid,
                            label=label,
                            token_id=token_id,
                            secret_hash=secret_hash,
                            services=format_services(services),
                            expires_at=db_time(expires, self.dialect),
                        )
                    )
                    aid = res.inserted_primary_key[0] if res.inserted_primary_key else None
                    if aid is None:
                        aid = conn.execute(
                            sa.select(_AP.id).where(_AP.token_id == token_id)
                        ).scalar()
                    for rule in rules:
                        conn.execute(
                            app_password_networks.insert().values(
                                app_password_id=aid, network=rule.spec
                            )
                        )
                return token
            except _LabelTaken:
                raise AlreadyExistsError(
                    f"user {key} already has an app password {label}"
                ) from None
            except AlreadyExistsError:
                # the label was free a moment ago: the identifier is taken (or the
                # label was just added by someone else: the next try says so)
                continue
        raise AlreadyExistsError(f"could not store app password {label} of {key}; try again")

    def delete_app_password(self, name: str, label: str) -> None:
        key = self._key(name)
        with self._conn(write=True) as conn:
            uid = self._uid(conn, key)
            aid = conn.execute(
                sa.select(_AP.id).where(_AP.user_id == uid, _AP.label == label)
            ).scalar()
            if aid is None:
                raise NotFoundError(f"user {key} has no app password {label}")
            conn.execute(
                app_password_networks.delete().where(app_password_networks.c.app_password_id == aid)
            )
            conn.execute(app_passwords.delete().where(_AP.id == aid))

    def list_app_passwords(self, name: str) -> tuple[str, tuple[AppPasswordRecord, ...]]:
        """(canonical user name, the user's app passwords with timestamps)."""
        key = self._key(name)
        with self._conn() as conn:
            uid = self._uid(conn, key)
            rows = conn.execute(APP_PASSWORD_DETAILS, {"uid": uid}).all()
        return key, detailed_app_passwords(rows, AppRowCache(), key)

    def count_app_passwords(self) -> tuple[int, int]:
        """(app passwords, users that have some), e.g. for the export's summary."""
        query = sa.select(sa.func.count(), sa.func.count(sa.distinct(_AP.user_id)))
        with self._conn() as conn:
            row = conn.execute(query).one()
        return int(row[0]), int(row[1])

    def touch_app_passwords(self, used: Mapping[int, float]) -> None:
        """Set ``last_used_at`` (epoch seconds) of app passwords, never moving it back."""
        if not used:
            return
        params: list[dict[str, Any]] = [
            {"aid": aid, "ts": datetime.fromtimestamp(t, UTC)} for aid, t in used.items()
        ]
        with self._conn(write=True) as conn:
            conn.execute(_TOUCH, params)
