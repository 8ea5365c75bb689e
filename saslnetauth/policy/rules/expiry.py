"""Expiring grants and app passwords: when a row stops admitting logins. Pure, standard
library only.

A network row (per user or global) or an app password may carry ``expires_at``: NULL for a
permanent row, else the instant from which the row no longer matches (a
login decided at ``expires_at`` or later is decided as if the row did not
exist). Times are handled as UNIX seconds (floats) inside the program and
shown as ISO 8601 in UTC, for both kinds of rows (stored values are read by
:func:`saslnetauth.store.times.stored_expiry`). The CLI takes a grant's end as a duration from
now (``--expires 8h``) or an instant with its time zone (``--until
2026-12-04T18:00Z``); both are parsed here.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from saslnetauth.errors import InvalidInputError

__all__ = [
    "DURATION_UNITS",
    "EARLIEST",
    "LATEST",
    "describe_expiry",
    "describe_remaining",
    "expiry_from_options",
    "format_utc",
    "parse_duration",
    "parse_until",
    "to_datetime",
]

#: ``--expires`` units and their seconds: minutes, hours, days, weeks.
DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^([0-9]{1,6})([mhdw])$")
#: The earliest and latest instants a datetime (and every supported database) can hold.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def parse_duration(text: str) -> int:
    """Seconds of a duration such as ``30m``, ``8h``, ``3d``, ``2w``; InvalidInputError
    for anything else, zero or negative."""
    match = _DURATION_RE.match(text.strip().lower())
    if match is None:
        raise InvalidInputError(
            f"invalid duration {text!r}: use a positive number with a unit, "
            "e.g. 30m, 8h, 3d, 2w (minutes, hours, days, weeks)"
        )
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidInputError(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


def parse_until(text: str, now: float) -> float:
    """The UNIX time of an ISO 8601 instant with its time zone (``2026-12-04T18:00Z``,
    ``2026-12-04T19:00+01:00``), which must lie after ``now``; InvalidInputError
    otherwise. A time without zone is refused: it would depend on where it is read."""
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputError(
            f"invalid time {text!r}: use ISO 8601 with a time zone, "
            "e.g. 2026-12-04T18:00Z (UTC) or 2026-12-04T19:00+01:00"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInputError(
            f"time {text!r} has no time zone: add Z for UTC (e.g. {raw}Z) or an offset "
            "such as +01:00"
        )
    ts = when.timestamp()
    if ts <= now:
        raise InvalidInputError(f"time {text!r} is in the past ({format_utc(ts)})")
    return ts


def expiry_from_options(expires: str | None, until: str | None, now: float) -> float | None:
    """The end of a grant from the CLI's ``--expires``/``--until`` (at most one given);
    None for a permanent grant. Whole seconds: what every database stores alike."""
    if expires is not None and until is not None:
        raise InvalidInputError("use either --expires or --until, not both")
    if expires is not None:
        ts = float(math.floor(now) + parse_duration(expires))
    elif until is not None:
        ts = float(math.ceil(parse_until(until, now)))
    else:
        return None
    if ts > LATEST:
        raise InvalidInputError("the expiry lies after the year 9999")
    return ts


def to_datetime(ts: float) -> datetime:
    """An aware UTC datetime of UNIX time ``ts``."""
    return datetime.fromtimestamp(ts, UTC)


def format_utc(ts: float) -> str:
    """``2026-12-04T18:00:00Z``: ISO 8601 in UTC, whole seconds."""
    return to_datetime(math.floor(ts)).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_remaining(seconds: float) -> str:
    """A duration for people, to its two largest units: ``3 h``, ``2 d 4 h``, ``25 min``."""
    left = max(0, int(seconds))
    if left < 60:
        return f"{left} s"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def describe_expiry(ts: float, now: float) -> str:
    """``expires in 3 h (2026-12-04T18:00:00Z)`` or ``EXPIRED 2 d ago (...)``."""
    if ts > now:
        return f"expires in {describe_remaining(ts - now)} ({format_utc(ts)})"
    return f"EXPIRED {describe_remaining(now - ts)} ago ({format_utc(ts)})"
