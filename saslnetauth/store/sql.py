"""SQL storage through SQLAlchemy Core: SQLite (default), PostgreSQL, MariaDB/MySQL.

Every SQLAlchemy error leaves this module as :class:`BackendError` (or
:class:`AlreadyExistsError` for a duplicate). Rows are validated as they
are read: a network row that does not parse is skipped with an error log,
so a bad row written by an admin script can only narrow access.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from saslnetauth.errors import (
    AlreadyExistsError,
    BackendError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    SchemaOutdatedError,
)
from saslnetauth.logfmt import kv, mask_url
from saslnetauth.model import BACKENDS, NetworkRecord, UserRecord, normalize_username
from saslnetauth.netrules import NetworkRule, RuleSet, format_services, parse_network
from saslnetauth.store.schema import SCHEMA_REVISION, global_networks, user_networks, users

log = logging.getLogger("saslnetauth.store")

#: Default SQLite busy timeout (seconds) before a locked database is an error.
DEFAULT_BUSY_TIMEOUT = 5.0
#: Default connect timeout (seconds) for PostgreSQL and MariaDB.
DEFAULT_CONNECT_TIMEOUT = 5
#: Parsed per-user network rows remembered at most (emptied when full).
USER_RULE_CACHE = 50_000
#: Global networks are re-read at least this often (seconds), even unchanged.
GLOBAL_FULL_RELOAD = 30.0


def _now() -> sa.ColumnElement[Any]:
    return sa.func.now()


class SqlStore:
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
        self.url = url
        self.lowercase = lowercase_usernames
        self.cache_seconds = cache_seconds
        self.engine = _create_engine(url, busy_timeout, connect_timeout, pool_size)
        self._global_lock = threading.Lock()
        self._global: RuleSet | None = None
        self._global_fp: tuple[Any, ...] | None = None
        self._global_checked = 0.0
        self._global_loaded = 0.0
        self._global_parsed: dict[tuple[Any, Any, Any], NetworkRule | None] = {}
        self._lean: tuple[str, bool] | None = None
        self._global_sql: str | None = None
        self._user_rules: dict[tuple[Any, Any], NetworkRule] = {}
        dbapi = self.engine.dialect.dbapi
        self._dbapi_error: type[BaseException] = getattr(dbapi, "Error", Exception)
        #: Refresh the global networks on a helper thread once they are loaded.
        self.background_refresh = False
        self._refreshing = threading.Lock()

    # -- plumbing ---------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        """The URL with any password hidden (for messages and logs)."""
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[Connection]:
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except IntegrityError as exc:
            raise AlreadyExistsError(_integrity_message(exc)) from None
        except SQLAlchemyError as exc:
            raise BackendError(f"database error ({self.dialect}): {_short(exc)}") from None

    def name(self, name: str) -> str:
        return normalize_username(name, lowercase=self.lowercase)

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

    # -- what the engine needs --------------------------------------------------

    def get_user(self, name: str, *, details: bool = False) -> UserRecord | None:
        """The user with its valid rules; ``details`` adds timestamps and comments.

        The lean form (the engine's, once per login) runs a statement built
        once, and skips the columns only admins look at.
        """
        key = self.name(name)
        if details:
            with self._conn() as conn:
                rows = conn.execute(_USER_DETAILS_BY_NAME, {"name": key}).all()
        else:
            rows = self._lookup_raw(key)
        if not rows:
            return None
        return self._build_user(rows)

    def _lookup_raw(self, key: str) -> list[Any]:
        """The per-login lookup on the driver's own connection: the statement is
        compiled once, and SQLAlchemy's per-execution work (about 60 us of 75 on
        SQLite) is skipped. Pool, pre-ping and timeouts are still SQLAlchemy's."""
        sql, params = self._lean_sql(key)
        return [_normalize_lean(row) for row in self._raw_rows(sql, params)]

    def _raw_rows(self, sql: str, params: Any = ()) -> list[Any]:
        """Run a compiled statement on a pooled driver connection; BackendError on errors."""
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise BackendError(f"database error ({self.dialect}): {_short(exc)}") from None
        try:
            cur = raw.cursor()
            try:
                cur.execute(sql, params)
                rows = list(cur.fetchall())
            finally:
                cur.close()
            if self.dialect != "sqlite":
                raw.rollback()  # end the read transaction the driver opened
        except self._dbapi_error as exc:
            raw.invalidate()
            raise BackendError(f"database error ({self.dialect}): {_short(exc)}") from None
        finally:
            raw.close()
        return rows

    def _cached_user_rule(
        self, nid: int, net: Any, services: Any, user: str
    ) -> tuple[NetworkRecord, NetworkRule | None]:
        """A user's network row, its rule parsed once per distinct (network, services)."""
        rule = self._user_rules.get((net, services))
        if rule is None:
            record, rule = _network_row("user_networks", nid, net, services, None, None, user)
            if rule is not None:  # invalid rows are re-checked (and logged) each time
                if len(self._user_rules) >= USER_RULE_CACHE:
                    self._user_rules.clear()
                self._user_rules[(net, services)] = rule
            return record, rule
        record = NetworkRecord(
            id=nid, network=rule.spec, services=rule.services, comment=None, user=user
        )
        return record, rule

    def _lean_sql(self, key: str) -> tuple[str, Any]:
        if self._lean is None:
            compiled = _USER_BY_NAME.compile(dialect=self.engine.dialect)
            self._lean = (compiled.string, bool(self.engine.dialect.positional))
        sql, positional = self._lean
        return sql, ((key,) if positional else {"name": key})

    def _build_user(self, rows: Sequence[Any]) -> UserRecord:
        first = rows[0]
        details = len(first) == len(_DETAIL_COLUMNS)
        uid, uname, phash, enabled, backend = first[:5]
        created, updated = (first[5], first[6]) if details else (None, None)
        if backend not in BACKENDS or not isinstance(enabled, bool):
            log.error(
                "%s",
                kv(
                    "invalid user row",
                    table="users",
                    id=uid,
                    user=uname,
                    error=f"backend={backend!r} enabled={enabled!r}",
                ),
            )
            raise BackendError(f"invalid row for user {uname!r} in table users")
        records: list[NetworkRecord] = []
        rules: list[NetworkRule] = []
        for row in rows:
            if details:
                nid, net, services, comment, ncreated = row[7:]
            else:
                nid, net, services = row[5:]
                comment = ncreated = None
            if nid is None:
                continue
            if details:
                rec, rule = _network_row(
                    "user_networks", nid, net, services, comment, ncreated, uname
                )
            else:
                rec, rule = self._cached_user_rule(nid, net, services, uname)
            records.append(rec)
            if rule is not None:
                rules.append(rule)
        return UserRecord(
            id=uid,
            name=uname,
            password_hash=phash,
            enabled=enabled,
            backend=backend,
            rules=RuleSet(rules),
            networks=tuple(records),
            created_at=created,
            updated_at=updated,
        )

    def global_rules(self) -> RuleSet:
        """Global rules, re-read when the table changes (checked every cache_seconds).

        With ``background_refresh`` (servers), once loaded, the check and any reload
        run on a helper thread while logins keep using the current rules, so no
        login waits for 100,000 networks to be re-read.
        """
        now = time.monotonic()
        current = self._global
        if current is not None and now - self._global_checked < self.cache_seconds:
            return current
        if current is not None and self.background_refresh:
            if not self._refreshing.locked():
                threading.Thread(target=self._refresh_in_background, daemon=True).start()
            return current
        return self._refresh_globals(now)

    def _refresh_in_background(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._refresh_globals(time.monotonic())
        except BackendError as exc:
            log.warning("%s", kv("global networks not refreshed", error=str(exc)))
        finally:
            self._refreshing.release()

    def _refresh_globals(self, now: float) -> RuleSet:
        with self._global_lock:
            if self._global is not None and now - self._global_checked < self.cache_seconds:
                return self._global
            fp_query = sa.select(
                sa.func.count(global_networks.c.id),
                sa.func.max(global_networks.c.id),
                sa.func.sum(global_networks.c.id),
            )
            with self._conn() as conn:
                fp = tuple(conn.execute(fp_query).one())
                stale = now - self._global_loaded >= GLOBAL_FULL_RELOAD
                if self._global is None or fp != self._global_fp or stale:
                    if self._global_sql is None:
                        compiled = _GLOBAL_RULE_ROWS.compile(dialect=self.engine.dialect)
                        self._global_sql = compiled.string
                    with _collector_paused():
                        rows = self._raw_rows(self._global_sql)  # 100k rows: no per-row work
                        self._global = self._global_ruleset(rows)
                    self._global_fp = fp
                    self._global_loaded = now
            self._global_checked = now
            return self._global

    def _global_ruleset(self, rows: Sequence[Any]) -> RuleSet:
        """Parse global rows, reusing the rules of rows unchanged since the last load
        (100,000 networks then reload in a fraction of the first load's time, and an
        invalid row is logged once, not at every reload)."""
        old = self._global_parsed
        parsed: dict[tuple[Any, Any, Any], NetworkRule | None] = {}
        rules = []
        for row_id, network, services, comment in rows:
            key = (network, services, comment)
            if key in old:
                rule = old[key]
            else:
                result = _parse_rule("global_networks", row_id, network, services, comment)
                rule = result if isinstance(result, NetworkRule) else None
            parsed[key] = rule
            if rule is not None:
                rules.append(rule)
        self._global_parsed = parsed
        return RuleSet(rules)

    def invalidate(self) -> None:
        """Forget cached global networks (e.g. on SIGHUP)."""
        with self._global_lock:
            self._global = None
            self._global_checked = 0.0

    def update_hash(self, name: str, new_hash: str) -> None:
        key = self.name(name)
        with self._conn(write=True) as conn:
            res = conn.execute(
                users.update()
                .where(users.c.name == key)
                .values(password_hash=new_hash, updated_at=_now())
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no such user: {key}")

    # -- admin operations -------------------------------------------------------

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
                for rule in _dedupe(networks):
                    conn.execute(user_networks.insert().values(user_id=uid, **_rule_values(rule)))
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
            conn.execute(users.delete().where(users.c.id == uid))

    def list_users(self) -> list[UserRecord]:
        query = _USER_DETAILS.order_by(users.c.name, user_networks.c.id)
        with self._conn() as conn:
            rows = conn.execute(query).all()
        grouped: dict[int, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
        out: list[UserRecord] = []
        for group in grouped.values():
            try:
                out.append(self._build_user(group))
            except BackendError:
                continue  # logged by _build_user
        return out

    def add_user_network(self, name: str, rule: NetworkRule) -> None:
        key = self.name(name)
        try:
            with self._conn(write=True) as conn:
                uid = self._user_id(conn, key)
                conn.execute(user_networks.insert().values(user_id=uid, **_rule_values(rule)))
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
                    user_networks.c.network.in_(_spec_variants(network)),
                )
            )
            if res.rowcount == 0:
                raise NotFoundError(f"user {key} has no network {network}")
            conn.execute(users.update().where(users.c.id == uid).values(updated_at=_now()))

    def add_global_network(self, rule: NetworkRule) -> None:
        try:
            with self._conn(write=True) as conn:
                conn.execute(global_networks.insert().values(**_rule_values(rule)))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"global network {rule.spec} already exists") from None
        self.invalidate()

    def delete_global_network(self, network: str) -> None:
        with self._conn(write=True) as conn:
            res = conn.execute(
                global_networks.delete().where(
                    global_networks.c.network.in_(_spec_variants(network))
                )
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no global network {network}")
        self.invalidate()

    def list_global_networks(self) -> list[NetworkRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                sa.select(
                    global_networks.c.id,
                    global_networks.c.network,
                    global_networks.c.services,
                    global_networks.c.comment,
                    global_networks.c.created_at,
                ).order_by(global_networks.c.id)
            ).all()
        return [_network_row("global_networks", *row)[0] for row in rows]


# -- statements built once ------------------------------------------------------------

_JOIN = users.outerjoin(user_networks, user_networks.c.user_id == users.c.id)
_LEAN_COLUMNS = (
    users.c.id,
    users.c.name,
    users.c.password_hash,
    users.c.enabled,
    users.c.backend,
    user_networks.c.id,
    user_networks.c.network,
    user_networks.c.services,
)
_DETAIL_COLUMNS = (
    users.c.id,
    users.c.name,
    users.c.password_hash,
    users.c.enabled,
    users.c.backend,
    users.c.created_at,
    users.c.updated_at,
    user_networks.c.id,
    user_networks.c.network,
    user_networks.c.services,
    user_networks.c.comment,
    user_networks.c.created_at,
)
_USER_BY_NAME = (
    sa.select(*_LEAN_COLUMNS)
    .select_from(_JOIN)
    .where(users.c.name == sa.bindparam("name"))
    .order_by(user_networks.c.id)
)
_USER_DETAILS = sa.select(*_DETAIL_COLUMNS).select_from(_JOIN)
_GLOBAL_RULE_ROWS = sa.select(
    global_networks.c.id,
    global_networks.c.network,
    global_networks.c.services,
    global_networks.c.comment,
).order_by(global_networks.c.id)
_USER_DETAILS_BY_NAME = _USER_DETAILS.where(users.c.name == sa.bindparam("name")).order_by(
    user_networks.c.id
)


# -- helpers ----------------------------------------------------------------------


def _normalize_lean(row: Any) -> tuple[Any, ...]:
    """Driver rows carry enabled as 0/1 on SQLite and MariaDB: make it a bool
    (any other value stays as it is and is refused as an invalid row)."""
    values = tuple(row)
    enabled = values[3]
    if not isinstance(enabled, bool) and enabled in (0, 1):
        values = (*values[:3], bool(enabled), *values[4:])
    return values


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a bulk of acyclic objects is built.

    Loading 100,000 global networks allocates several hundred thousand tuples,
    none in a reference cycle (they are freed by reference counting); the
    collector would otherwise rescan the growing heap again and again, about a
    quarter of a cold load (benchmarks/netrules_100k.py). Re-enabled only if it
    was enabled, so nesting and other threads end with it enabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_rule(
    table: str, row_id: int, network: Any, services: Any, comment: Any, user: str | None = None
) -> NetworkRule | str:
    """The rule of one network row, or why it is invalid (logged)."""
    scope = "user" if user is not None else "global"
    try:
        if not isinstance(network, str) or (services is not None and not isinstance(services, str)):
            raise InvalidInputError("network and services must be text")
        return NetworkRule.parse(network, services, scope=scope, comment=comment)
    except InvalidInputError as exc:
        log.error(
            "%s",
            kv(
                "invalid network row skipped",
                table=table,
                id=row_id,
                user=user,
                network=network,
                services=services,
                error=str(exc),
            ),
        )
        return str(exc)


def _network_row(
    table: str,
    row_id: int,
    network: Any,
    services: Any,
    comment: Any,
    created: Any,
    user: str | None = None,
) -> tuple[NetworkRecord, NetworkRule | None]:
    """Validate one network row; an invalid one is logged and yields no rule."""
    rule = _parse_rule(table, row_id, network, services, comment, user)
    if not isinstance(rule, NetworkRule):
        record = NetworkRecord(
            id=row_id,
            network=str(network),
            services=None,
            comment=comment,
            created_at=created,
            user=user,
            error=rule,
        )
        return record, None
    record = NetworkRecord(
        id=row_id,
        network=rule.spec,
        services=rule.services,
        comment=comment,
        created_at=created,
        user=user,
    )
    return record, rule


def _rule_values(rule: NetworkRule) -> dict[str, Any]:
    return {
        "network": rule.spec,
        "services": format_services(rule.services),
        "comment": rule.comment,
    }


def _dedupe(rules: Sequence[NetworkRule]) -> list[NetworkRule]:
    seen: dict[str, NetworkRule] = {}
    for rule in rules:
        if rule.spec in seen:
            raise InvalidInputError(f"network {rule.spec} given twice")
        seen[rule.spec] = rule
    return list(seen.values())


def _spec_variants(network: str) -> list[str]:
    """The canonical form of ``network`` plus the text as given."""
    variants = [network.strip()]
    with contextlib.suppress(InvalidInputError):
        variants.insert(0, parse_network(network)[0])
    return variants


def _short(exc: BaseException) -> str:
    text = mask_url(str(getattr(exc, "orig", None) or exc)).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _integrity_message(exc: IntegrityError) -> str:
    return f"duplicate entry: {_short(exc)}"


def _mask_invalid_url(url: str) -> str:
    """An unparsable URL for a message: whatever precedes its last ``@`` may hold a
    password, so only the scheme and what follows the ``@`` are shown."""
    if "@" not in url:
        return url
    scheme, sep, _ = url.partition("://")
    return (f"{scheme}://" if sep else "") + "***@" + url.rpartition("@")[2]


def _create_engine(url: str, busy_timeout: float, connect_timeout: int, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"invalid database URL {_mask_invalid_url(url)!r}; examples: sqlite:////var/lib/saslnetauth/"
            "saslnetauth.db, postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args = {"timeout": busy_timeout, "check_same_thread": False}
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size * 2
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"connect_timeout": connect_timeout}
        kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_timeout=busy_timeout)
    elif backend in ("mysql", "mariadb"):
        if "+" not in parsed.drivername:
            parsed = parsed.set(drivername=f"{backend}+pymysql")
        connect_args = {
            "connect_timeout": connect_timeout,
            "read_timeout": 30,
            "write_timeout": 30,
        }
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_timeout=busy_timeout,
            pool_recycle=3600,
        )
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        extra = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}.get(backend)
        hint = f"; install it with: pip install 'saslnetauth[{extra}]'" if extra else ""
        raise ConfigError(
            f"database driver for {backend!r} is not available ({exc}){hint}"
        ) from None
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL: {mask_url(str(exc))}") from None
    if backend == "sqlite":
        _setup_sqlite(engine, busy_timeout)
    return engine


def _setup_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            try:
                cur.execute("PRAGMA journal_mode = WAL")
            except Exception as exc:  # a read-only file can't switch; reading still works
                log.debug("cannot switch SQLite to WAL: %s", exc)
        finally:
            cur.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or :memory:)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(os.path.expanduser(parsed.database))
