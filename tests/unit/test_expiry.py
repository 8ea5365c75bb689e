"""Parsing and showing the end of a grant (--expires, --until, stored expires_at)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.rules.expiry import (
    describe_expiry,
    describe_remaining,
    expiry_from_options,
    format_utc,
    parse_duration,
    parse_until,
)
from saslnetauth.store.times import stored_expiry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("8h", 28800), ("3d", 3 * 86400), ("2w", 14 * 86400), (" 1H ", 3600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "8", "h", "0h", "00m", "-1h", "+1h", "1.5h", "8 hours", "1d12h", "30s", "1y", "٣h"]
)
def test_bad_durations_are_refused_clearly(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"(duration|longer than zero)"):
        parse_duration(text)


def test_until_with_zone() -> None:
    assert (
        parse_until("2026-12-04T18:00Z", NOW) == datetime(2026, 12, 4, 18, tzinfo=UTC).timestamp()
    )
    plus_one = parse_until("2026-12-04T19:00+01:00", NOW)
    assert plus_one == datetime(2026, 12, 4, 18, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-12-04T18:00", "no time zone"),
        ("2026-12-04", "no time zone"),
        ("tomorrow", "ISO 8601 with a time zone"),
        ("2026-12-04T18:00+25:00", "ISO 8601"),
        ("2026-11-30T18:00Z", "in the past"),
        ("2026-12-01T12:00Z", "in the past"),  # now is not after now
    ],
)
def test_bad_until_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_until(text, NOW)


def test_options() -> None:
    assert expiry_from_options(None, None, NOW) is None
    assert expiry_from_options("8h", None, NOW + 0.7) == NOW + 8 * 3600
    assert (
        expiry_from_options(None, "2026-12-04T18:00:00.2Z", NOW) == NOW + 3 * 86400 + 6 * 3600 + 1
    )
    with pytest.raises(InvalidInputError, match="not both"):
        expiry_from_options("8h", "2026-12-04T18:00Z", NOW)
    with pytest.raises(InvalidInputError, match="9999"):
        expiry_from_options("999999w", None, NOW)


def test_showing() -> None:
    assert format_utc(NOW + 0.9) == "2026-12-01T12:00:00Z"
    assert describe_remaining(3 * 3600) == "3 h"
    assert describe_remaining(3 * 3600 - 1) == "2 h 59 min"
    assert describe_remaining(2 * 86400 + 4 * 3600 + 59) == "2 d 4 h"
    assert describe_remaining(25 * 60) == "25 min"
    assert describe_remaining(40.9) == "40 s"
    assert describe_expiry(NOW + 3 * 3600, NOW) == "expires in 3 h (2026-12-01T15:00:00Z)"
    assert describe_expiry(NOW - 86400, NOW) == "EXPIRED 1 d ago (2026-11-30T12:00:00Z)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("2026-12-01 12:00:00", NOW),  # SQLite as SQLAlchemy and datetime('now') write it
        ("2026-12-01 12:00:00.000000", NOW),
        ("2026-12-01T12:00:00Z", NOW),
        ("2026-12-01T13:00:00+01:00", NOW),
        (datetime(2026, 12, 1, 12, 0), NOW),  # MariaDB: naive is UTC
        (datetime(2026, 12, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))), NOW),
        (Decimal("1796126400.000000"), NOW),  # PostgreSQL's EXTRACT(EPOCH ...)
        (int(NOW), NOW),  # SQLite Unix time
    ],
)
def test_stored_expiry(value: object, expected: float | None) -> None:
    assert stored_expiry(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "tomorrow",
        "",
        "0000-00-00 00:00:00",  # MariaDB's zero date, as PyMySQL gives it
        Decimal("Infinity"),  # PostgreSQL 'infinity'
        Decimal("-Infinity"),
        float("nan"),
        True,
        b"2026-12-01 12:00:00",
        10**20,
    ],
)
def test_stored_expiry_that_is_not_a_time(value: object) -> None:
    with pytest.raises((ValueError, OverflowError)):
        stored_expiry(value)
