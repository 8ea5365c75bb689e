"""How ``expires_at`` is stored and read on every database.

It is read as the driver gives it (:class:`expiry_value`), never through
SQLAlchemy's conversion (which raises on a SQLite text that is not a time, failing
the whole query instead of one row), and parsed by :func:`stored_expiry`; a time
is written as :func:`db_time` says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType

from saslnetauth.policy.rules.expiry import EARLIEST, LATEST, to_datetime

__all__ = ["db_time", "expiry_value", "stored_expiry"]


class expiry_value(FunctionElement[Any]):
    """``expires_at`` as the driver returns it, without SQLAlchemy's conversion.

    SQLite and MariaDB give the stored value (SQLite: text or a number, as
    written; MariaDB: a datetime, or text for a zero date); PostgreSQL gives
    ``EXTRACT(EPOCH FROM expires_at)``, a number, because psycopg cannot load
    ``infinity`` as a datetime. :func:`stored_expiry` reads any of them.
    """

    name = "expiry_value"
    inherit_cache = True
    type = NullType()


@compiles(expiry_value)
def _expiry_default(element: expiry_value, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(expiry_value, "postgresql")
def _expiry_postgresql(element: expiry_value, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


def stored_expiry(value: Any) -> float | None:
    """The UNIX time of a stored ``expires_at`` (None: permanent); ValueError when it is
    not a time. Accepted: a datetime (without zone: UTC), ISO 8601 text (without zone:
    UTC; SQLite's ``datetime('now', '+8 hours')`` writes that), a finite number of
    seconds since 1970 (SQLite's Unix time; PostgreSQL's epoch)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        ts = float(value)
        if not EARLIEST <= ts <= LATEST:  # NaN too
            raise ValueError(f"invalid expires_at {value!r}: not a time between years 1 and 9999")
        return ts
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"invalid expires_at {value!r}: expected a time such as 2026-12-04 18:00:00 (UTC)"
            ) from None
    else:
        raise ValueError(f"invalid expires_at {value!r}: not a time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"invalid expires_at {value!r}: {exc}") from None


def db_time(ts: float | None, dialect: str) -> datetime | None:
    """``expires_at`` to write for UNIX time ``ts``: aware UTC for PostgreSQL (a
    ``timestamptz``), naive UTC for SQLite and MariaDB (their columns have no zone;
    a naive value is UTC by this schema's rule)."""
    if ts is None:
        return None
    when = to_datetime(ts)
    return when if dialect == "postgresql" else when.replace(tzinfo=None)
