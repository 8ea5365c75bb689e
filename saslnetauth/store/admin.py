"""The admin side of the store: create, change, delete and list users and networks.

What the CLI calls; every write is one transaction. Writes to
``global_networks`` need no bookkeeping here: the database's triggers bump
``rules_generation`` (see :mod:`saslnetauth.store.global_rules`); this
process's own copy is dropped at once so that its next use re-reads it.

Adding a network that exists already (docs/grants.md): a
permanent one is never changed (AlreadyExistsError, as ever); an expiring
one (or one whose ``expires_at`` does not parse) gets the new expiry, or
becomes permanent when the new one has none, and keeps its services, which
must be given alike (a re-add never widens a grant silently); a comment
given replaces the old one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.errors import AlreadyExistsError, BackendError, InvalidInputError, NotFoundError
from saslnetauth.policy.model import BACKENDS, NetworkRecord, UserRecord, normalize_username
from saslnetauth.policy.rules.expiry import format_utc
from saslnetauth.policy.rules.netrules import NetworkRule, describe_services, parse_services
from saslnetauth.store.connect import Database
from saslnetauth.store.global_rules import GlobalRules
from saslnetauth.store.retired import retire_changed, retired_of_user
from saslnetauth.store.rows import (
    GLOBAL_DETAILS,
    USER_DETAILS,
    dedupe,
    detailed_user,
    expiry_value,
    network_row,
    rule_values,
    spec_variants,
    stored_expiry,
)
from saslnetauth.store.schema import (
    app_password_networks,
    app_passwords,
    global_networks,
    retired_passwords,
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
                    conn.execute(
                        user_networks.insert().values(
                            user_id=uid, **rule_values(rule, self.dialect)
                        )
                    )
        except AlreadyExistsError:
            raise AlreadyExistsError(f"user {key} already exists") from None
        return key

    def _user_id(self, conn: Connection, key: str) -> int:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == key)).scalar()
        if uid is None:
            raise NotFoundError(f"no such user: {key}")
        return int(uid)

    def set_password(self, name: str, password_hash: str | None) -> None:
        """Replace the user's hash; the old one is kept as retired (store/retired.py)."""
        key = self.name(name)
        with self._conn(write=True) as conn:
            uid = self._user_id(conn, key)
            retire_changed(conn, {uid: password_hash})
            conn.execute(
                users.update()
                .where(users.c.id == uid)
                .values(updated_at=_now(), password_hash=password_hash)
            )

    def retired_passwords(self, name: str) -> list[dict[str, Any]]:
        """When each kept old password of the user was retired and last tried."""
        key = self.name(name)
        with self._conn() as conn:
            return retired_of_user(conn, self._user_id(conn, key))

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._update_user(name, enabled=enabled)

    def set_backend(self, name: str, backend: str) -> None:
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; use one of {BACKENDS}")
        self._update_user(name, backend=backend)

    def set_main_password_services(self, name: str, services: str | None) -> None:
        """Where the main password of ``name`` may log in: the text of
        :func:`saslnetauth.policy.mainpassword.format_main_services`, or None for the default."""
        self._update_user(name, main_password_services=services)

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
            conn.execute(retired_passwords.delete().where(retired_passwords.c.user_id == uid))
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

    def add_user_network(self, name: str, rule: NetworkRule) -> str | None:
        """Add ``rule`` to user ``name``, or renew the user's expiring grant of that
        network (module docstring). Returns None for a new row, else the old expiry
        for people (``until 2026-12-04T18:00:00Z``)."""
        key = self.name(name)
        exists = f"user {key} already has network {rule.spec}"
        delete = f"saslnetauth user net del {key} {rule.spec}"
        try:
            with self._conn(write=True) as conn:
                uid = self._user_id(conn, key)
                where = (user_networks.c.user_id == uid,)
                old = _renew(conn, user_networks, where, rule, self.dialect, exists, delete)
                if old is None:
                    values = rule_values(rule, self.dialect)
                    conn.execute(user_networks.insert().values(user_id=uid, **values))
                conn.execute(users.update().where(users.c.id == uid).values(updated_at=_now()))
        except AlreadyExistsError as exc:
            # a row added meanwhile (unique constraint) has no message of ours
            raise AlreadyExistsError(str(exc) if _ours(exc) else exists) from None
        return old

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

    def add_global_network(self, rule: NetworkRule) -> str | None:
        """Add global network ``rule``, or renew an expiring one (module docstring);
        returns as :meth:`add_user_network` does."""
        exists = f"global network {rule.spec} already exists"
        delete = f"saslnetauth net del {rule.spec}"
        try:
            with self._conn(write=True) as conn:
                old = _renew(conn, global_networks, (), rule, self.dialect, exists, delete)
                if old is None:
                    conn.execute(global_networks.insert().values(**rule_values(rule, self.dialect)))
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(str(exc) if _ours(exc) else exists) from None
        finally:
            self.invalidate()
        return old

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


def _renew(
    conn: Connection,
    table: sa.Table,
    where: tuple[sa.ColumnElement[bool], ...],
    rule: NetworkRule,
    dialect: str,
    exists: str,
    delete_command: str,
) -> str | None:
    """Give an existing expiring row of ``rule``'s network the expiry of ``rule`` (None:
    no such row, insert one). AlreadyExistsError (message ``exists`` and a hint) for a
    permanent row, or for services that differ: a renewal never widens or narrows a
    grant unnoticed."""
    row = conn.execute(
        sa.select(table.c.id, table.c.services, expiry_value(table.c.expires_at)).where(
            *where, table.c.network.in_(spec_variants(rule.spec))
        )
    ).first()
    if row is None:
        return None
    row_id, services, raw = row
    if raw is None:
        if rule.expires is None:
            raise AlreadyExistsError(exists)
        raise AlreadyExistsError(
            f"{exists}, permanently; to make it expire, remove it first: {delete_command}"
        )
    try:
        old_services: frozenset[str] | str | None = parse_services(services)
    except InvalidInputError:
        old_services = str(services)
    if old_services != rule.services:
        shown = old_services if isinstance(old_services, str) else describe_services(old_services)
        raise AlreadyExistsError(
            f"{exists}, for {shown}, not {describe_services(rule.services)}: give the same "
            f"--service options to change its expiry, or remove it first: {delete_command}"
        )
    values: dict[str, Any] = {
        "network": rule.spec,
        "expires_at": rule_values(rule, dialect)["expires_at"],
    }
    if rule.comment is not None:
        values["comment"] = rule.comment
    conn.execute(table.update().where(table.c.id == row_id).values(**values))
    try:
        expires = stored_expiry(raw)
    except ValueError:
        return "an invalid expiry"
    return f"until {format_utc(expires)}" if expires is not None else None


def _ours(exc: AlreadyExistsError) -> bool:
    """True for the messages of :func:`_renew` (not a database's duplicate-key error)."""
    return not str(exc).startswith("duplicate entry")
