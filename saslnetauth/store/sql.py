"""SQL storage through SQLAlchemy Core: SQLite (default), PostgreSQL, MariaDB/MySQL.

:class:`SqlStore` is the project's store: the per-login path (user lookup,
global networks, rehash) here, the admin operations in
:mod:`saslnetauth.store.admin`, connections in :mod:`saslnetauth.store.connect`,
the global networks' cache in :mod:`saslnetauth.store.global_rules`, and the
statements with their row builders in :mod:`saslnetauth.store.rows`.

Every SQLAlchemy error leaves the store as :class:`BackendError` (or
:class:`AlreadyExistsError` for a duplicate). Rows are validated as they are
read: a network row that does not parse is skipped with an error log, so a
bad row written by an admin script can only narrow access.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from saslnetauth.errors import NotFoundError, SchemaOutdatedError
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import RuleSet
from saslnetauth.store.admin import StoreAdmin
from saslnetauth.store.appadmin import AppPasswordAdmin
from saslnetauth.store.approws import APP_PASSWORDS_OF_USER, AppRowCache, lean_app_passwords
from saslnetauth.store.connect import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    sqlite_path,
)
from saslnetauth.store.global_rules import GlobalRules
from saslnetauth.store.retired import retired_hashes, retired_tried
from saslnetauth.store.rows import (
    USER_BY_NAME,
    USER_DETAILS_BY_NAME,
    UserRuleCache,
    detailed_user,
    lean_user,
)
from saslnetauth.store.schema import SCHEMA_REVISION, users
from saslnetauth.store.sending import SendingAdmin

__all__ = ["DEFAULT_BUSY_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "SqlStore", "sqlite_path"]


class SqlStore(StoreAdmin, AppPasswordAdmin, SendingAdmin):
    """The project's store. Thread-safe; one instance per process."""

    def __init__(
        self,
        url: str,
        *,
        lowercase_usernames: bool = True,
        cache_seconds: float = 1.0,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        pool_size: int = 8,
    ) -> None:
        super().__init__(
            url, busy_timeout=busy_timeout, connect_timeout=connect_timeout, pool_size=pool_size
        )
        self.lowercase = lowercase_usernames
        self.global_rules_cache = GlobalRules(self, cache_seconds)
        self._user_rules = UserRuleCache()
        self._app_rows = AppRowCache()

    @property
    def cache_seconds(self) -> float:
        return self.global_rules_cache.cache_seconds

    # -- schema -------------------------------------------------------------------

    def schema_revision(self) -> str | None:
        """The Alembic revision stored in the database, or None if none."""
        with self._conn() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])

    def check_schema(self) -> None:
        """Refuse to work on a database whose schema is not the current one."""
        current = self.schema_revision()
        if current == SCHEMA_REVISION:
            return
        where = self.describe()
        if current is None:
            raise SchemaOutdatedError(
                f"database {where} has no saslnetauth schema; run: saslnetauth init"
            )
        raise SchemaOutdatedError(
            f"database {where} is at schema revision {current}, this saslnetauth needs "
            f"{SCHEMA_REVISION}; run: saslnetauth db upgrade"
        )

    # -- what the engine needs, once per login ------------------------------------

    def get_user(self, name: str, *, details: bool = False) -> UserRecord | None:
        """The user with its valid rules and its app passwords, read from the database
        at every call; ``details`` adds timestamps and comments (and leaves the app
        passwords to :meth:`list_app_passwords`).

        The lean form (the engine's, once per login) runs a statement compiled
        once on the driver's own connection, and skips the columns only admins
        look at; only the parsing of network texts is remembered.
        """
        key = self.name(name)
        if details:
            with self._conn() as conn:
                rows: list[Any] = list(conn.execute(USER_DETAILS_BY_NAME, {"name": key}).all())
            return detailed_user(rows) if rows else None
        params = (key,) if self.positional else {"name": key}
        rows = self.raw_rows(self.compiled(USER_BY_NAME), params)
        if not rows:
            return None
        user = lean_user(rows, self._user_rules)
        if rows[0][-1]:  # HAS_APP_PASSWORDS: one more indexed read, only for these users
            uid = (user.id,) if self.positional else {"uid": user.id}
            app_rows = self.raw_rows(self.compiled(APP_PASSWORDS_OF_USER), uid)
            apps = lean_app_passwords(app_rows, self._app_rows, user.name)
            user = replace(user, app_passwords=apps)
        return user

    def global_rules(self) -> RuleSet:
        """The global networks, never older than ``cache_seconds`` unconfirmed:
        see :mod:`saslnetauth.store.global_rules`. BackendError (TEMPFAIL) when
        the database cannot confirm them."""
        return self.global_rules_cache.get()

    def retired_hashes(self, user_id: int, days: int) -> list[tuple[int, str]]:
        """(row id, hash) of the user's recently retired passwords, newest first."""
        with self._conn() as conn:
            return retired_hashes(conn, user_id, days)

    def retired_tried(self, row_id: int) -> None:
        """A failed login just used retired password ``row_id``."""
        with self._conn(write=True) as conn:
            retired_tried(conn, row_id)

    def update_hash(self, name: str, new_hash: str) -> None:
        key = self.name(name)
        with self._conn(write=True) as conn:
            res = conn.execute(
                users.update()
                .where(users.c.name == key)
                .values(password_hash=new_hash, updated_at=sa.func.now())
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no such user: {key}")
