"""Connection and dialect setup: the SQLAlchemy engine, its pool, and database errors.

:class:`Database` owns the engine of one database URL. Every SQLAlchemy or
driver error leaves it as :class:`BackendError` (or
:class:`AlreadyExistsError` for a duplicate). Per-dialect choices: SQLite in
WAL mode with a busy timeout and foreign keys on; PostgreSQL through psycopg;
MariaDB/MySQL through PyMySQL in utf8mb4; connect timeouts everywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from saslnetauth.errors import AlreadyExistsError, BackendError, ConfigError
from saslnetauth.logfmt import mask_url

log = logging.getLogger("saslnetauth.store")

#: Default SQLite busy timeout (seconds) before a locked database is an error.
DEFAULT_BUSY_TIMEOUT = 5.0
#: Default connect timeout (seconds) for PostgreSQL and MariaDB.
DEFAULT_CONNECT_TIMEOUT = 5


class Database:
    """One database: its engine, SQLAlchemy connections, and the driver's own ones."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        pool_size: int = 8,
    ) -> None:
        self.url = url
        self.engine = create_engine(url, busy_timeout, connect_timeout, pool_size)
        dbapi = self.engine.dialect.dbapi
        self._dbapi_error: type[BaseException] = getattr(dbapi, "Error", Exception)
        self._compiled: dict[int, tuple[sa.ClauseElement, str]] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        """The URL with any password hidden (for messages and logs)."""
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def _error(self, exc: BaseException) -> BackendError:
        return BackendError(f"database error ({self.dialect}): {short_error(exc)}")

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[Connection]:
        """A SQLAlchemy connection; ``write`` wraps it in one committed transaction."""
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except IntegrityError as exc:
            raise AlreadyExistsError(f"duplicate entry: {short_error(exc)}") from None
        except SQLAlchemyError as exc:
            raise self._error(exc) from None

    def compiled(self, statement: sa.ClauseElement) -> str:
        """The SQL text of ``statement`` for this dialect, compiled once."""
        hit = self._compiled.get(id(statement))
        if hit is None or hit[0] is not statement:
            hit = (statement, str(statement.compile(dialect=self.engine.dialect)))
            self._compiled[id(statement)] = hit
        return hit[1]

    @property
    def positional(self) -> bool:
        """True when the driver takes parameters as a tuple (SQLite, psycopg: no)."""
        return bool(self.engine.dialect.positional)

    def raw_rows(self, sql: str, params: Any = ()) -> list[Any]:
        """Run compiled SQL on a pooled driver connection, in a read transaction
        of its own; BackendError on errors.

        The hot path's way: SQLAlchemy's per-execution work (about 60 us of 75
        on SQLite) is skipped; pool, pre-ping and timeouts are still SQLAlchemy's.
        """
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise self._error(exc) from None
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
            raise self._error(exc) from None
        finally:
            raw.close()
        return rows


def short_error(exc: BaseException) -> str:
    """The first line of a database error (the driver's own when there is one)."""
    text = mask_url(str(getattr(exc, "orig", None) or exc)).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _mask_invalid_url(url: str) -> str:
    """An unparsable URL for a message: whatever precedes its last ``@`` may hold a
    password, so only the scheme and what follows the ``@`` are shown."""
    if "@" not in url:
        return url
    scheme, sep, _ = url.partition("://")
    return (f"{scheme}://" if sep else "") + "***@" + url.rpartition("@")[2]


def create_engine(url: str, busy_timeout: float, connect_timeout: int, pool_size: int) -> Engine:
    """The engine of ``url`` with the project's per-dialect settings."""
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
