"""The admin side of the store: create, change, delete and list users and networks.

What the CLI calls; every write is one transaction. Writes to
``global_networks`` need no bookkeeping here: the database's triggers bump
``rules_generation`` (see :mod:`saslnetauth.store.global_rules`); this
process's own copy is dropped at once so that its next use re-reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.errors import AlreadyExistsError, BackendError, InvalidInputError, NotFoundError
from saslnetauth.model import BACKENDS, NetworkRecord, UserRecord, normalize_username
from saslnetauth.netrules import NetworkRule
from saslnetauth.store.connect import Database
from saslnetauth.store.global_rules import GlobalRules
from saslnetauth.store.rows import (
    GLOBAL_DETAILS,
    USER_DETAILS,
    dedupe,
    detailed_user,
    network_row,
    rule_values,
    spec_variants,
)
from saslnetauth.store.schema import (
    app_password_networks,
    app_passwords,
    global_networks,
    user_networks,
    users,
)


def _now() -> sa.ColumnElement[Any]:
    return sa.func.now()


class StoreAdmin(Database):
    """Admin operations; :class:`~saslnetauth.store.sql.SqlStore` adds the login path."""

    lowercase: bool
    global_rules_cache: GlobalRules

    def name(self, name: str) -> str:
        return normalize_username(name, lowercase=self.lowercase)

    def invalidate(self) -> None:
        """Forget this process's copy of the global networks (e.g. on SIGHUP)."""
        self.global_rules_cache.invalidate()

    def add_user(
        self,
        name: str,
        password_hash: str | None,
        *,
        enabled: bool = True,
        backend: str = "hash",
        networks: Sequence[NetworkRule] = (),
    ) -> str:
        key = self.name(name)
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; use one of {BACKENDS}")
        try:
            with self._conn(write=True) as conn:
                res = conn.execute(
                    users.insert().values(
                        name=key, password_hash=password_hash, enabled=enabled, backend=backend
                    )
                )
                uid = res.inserted_primary_key[0] if res.inserted_primary_key else None
                if uid is None:
                    uid = conn.execute(sa.select(users.c.id).where(users.c.name == key)).scalar()
                for rule in dedupe(networks):
                    conn.execute(user_networks.insert().values(user_id=uid, **rule_values(rule)))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"user {key} already exists") from None
        return key

    def _user_id(self, conn: Connection, key: str) -> int:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == key)).scalar()
        if uid is None:
            raise NotFoundError(f"no such user: {key}")
        return int(uid)

    def set_password(self, name: str, password_hash: str | None) -> None:
        self._update_user(name, password_hash=password_hash)

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._update_user(name, enabled=enabled)

    def set_backend(self, name: str, backend: str) -> None:
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; use one of {BACKENDS}")
        self._update_user(name, backend=backend)

    def _update_user(self, name: str, **values: Any) -> None:
        key = self.name(name)
        with self._conn(write=True) as conn:
            res = conn.execute(
                users.update().where(users.c.name == key).values(updated_at=_now(), **values)
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no such user: {key}")

    def delete_user(self, name: str) -> None:
        key = self.name(name)
        with self._conn(write=True) as conn:
            uid = self._user_id(conn, key)
            conn.execute(user_networks.delete().where(user_networks.c.user_id == uid))
            # explicit, like the networks: a script's SQLite connection may not enforce
            # the cascade, and a reused user id must not inherit them
            apps = sa.select(app_passwords.c.id).where(app_passwords.c.user_id == uid)
            conn.execute(
                app_password_networks.delete().where(
                    app_password_networks.c.app_password_id.in_(apps)
                )
            )
            conn.execute(app_passwords.delete().where(app_passwords.c.user_id == uid))
            conn.execute(users.delete().where(users.c.id == uid))

    def list_users(self) -> list[UserRecord]:
        query = USER_DETAILS.order_by(users.c.name, user_networks.c.id)
        with self._conn() as conn:
            rows = conn.execute(query).all()
        grouped: dict[int, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
        out: list[UserRecord] = []
        for group in grouped.values():
            try:
                out.append(detailed_user(group))
            except BackendError:
                continue  # logged by detailed_user
        return out

    def add_user_network(self, name: str, rule: NetworkRule) -> None:
        key = self.name(name)
        try:
            with self._conn(write=True) as conn:
                uid = self._user_id(conn, key)
                conn.execute(user_networks.insert().values(user_id=uid, **rule_values(rule)))
                conn.execute(users.update().where(users.c.id == uid).values(updated_at=_now()))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"user {key} already has network {rule.spec}") from None

    def delete_user_network(self, name: str, network: str) -> None:
        key = self.name(name)
        with self._conn(write=True) as conn:
            uid = self._user_id(conn, key)
            res = conn.execute(
                user_networks.delete().where(
                    user_networks.c.user_id == uid,
                    user_networks.c.network.in_(spec_variants(network)),
                )
            )
            if res.rowcount == 0:
                raise NotFoundError(f"user {key} has no network {network}")
            conn.execute(users.update().where(users.c.id == uid).values(updated_at=_now()))

    def add_global_network(self, rule: NetworkRule) -> None:
        try:
            with self._conn(write=True) as conn:
                conn.execute(global_networks.insert().values(**rule_values(rule)))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"global network {rule.spec} already exists") from None
        self.invalidate()

    def delete_global_network(self, network: str) -> None:
        with self._conn(write=True) as conn:
            res = conn.execute(
                global_networks.delete().where(
                    global_networks.c.network.in_(spec_variants(network))
                )
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no global network {network}")
        self.invalidate()

    def list_global_networks(self) -> list[NetworkRecord]:
        with self._conn() as conn:
            rows = conn.execute(GLOBAL_DETAILS).all()
        return [network_row("global_networks", *row)[0] for row in rows]
