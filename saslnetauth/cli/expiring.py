"""The CLI's side of expiring grants: ``--expires``/``--until`` and how an expiry is shown."""

from __future__ import annotations

import time

import click

from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.model import NetworkRecord
from saslnetauth.policy.rules.expiry import (
    describe_expiry,
    describe_remaining,
    expiry_from_options,
    format_utc,
)
from saslnetauth.policy.rules.netrules import NetworkRule

__all__ = ["added_message", "expiry_options", "new_grant", "resolve_expiry", "shown_expiry"]


def expiry_options(fn: click.decorators.FC) -> click.decorators.FC:
    """``--expires DURATION`` and ``--until TIME`` (one of them, or neither: permanent)."""
    fn = click.option(
        "--until",
        metavar="TIME",
        help="The grant ends at TIME: ISO 8601 with a time zone, e.g. 2026-12-04T18:00Z "
        "or 2026-12-04T19:00+01:00.",
    )(fn)
    fn = click.option(
        "--expires",
        metavar="DURATION",
        help="The grant ends DURATION from now: 30m, 8h, 3d, 2w. Without --expires or "
        "--until it is permanent. Re-adding an expiring network changes its end "
        "(without either: makes it permanent).",
    )(fn)
    return fn


def resolve_expiry(expires: str | None, until: str | None, now: float) -> float | None:
    """The grant's end from the options (UNIX time), or None; a usage error (exit 2)
    that says what is accepted otherwise."""
    try:
        return expiry_from_options(expires, until, now)
    except InvalidInputError as exc:
        param = "--until" if until is not None and expires is None else "--expires"
        if expires is not None and until is not None:
            raise click.UsageError(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint=f"'{param}'") from None


def new_grant(
    network: str,
    services: tuple[str, ...],
    scope: str,
    comment: str | None,
    expires: str | None,
    until: str | None,
) -> tuple[NetworkRule, float | None, float]:
    """The rule that ``user net add`` or ``net add`` stores, its end (None: for good)
    and the time it was read at."""
    from saslnetauth.cli.common import check_comment

    check_comment(comment)
    now = time.time()
    ends = resolve_expiry(expires, until, now)
    rule = NetworkRule.parse(network, services, scope=scope, comment=comment, expires=ends)
    return rule, ends, now


def added_message(
    what: str, services: str, expires: float | None, old: str | None, now: float
) -> str:
    """``network 192.0.2.0/24 added (all services), expires in 8 h (...)``, or
    ``... renewed (all services; was until ...), ...`` for a renewal."""
    text = (
        f"{what} added ({services})" if old is None else f"{what} renewed ({services}; was {old})"
    )
    if expires is None:
        return text + (", now permanent" if old is not None else "")
    return f"{text}, {describe_expiry(expires, now)}"


def shown_expiry(record: NetworkRecord, now: float | None = None) -> str:
    """For tables: ``""``, ``until 2026-12-04T18:00:00Z (7 h)`` or ``EXPIRED ...``."""
    if record.expires is None:
        return ""
    at = time.time() if now is None else now
    if record.expired(at):
        return f"EXPIRED {format_utc(record.expires)}"
    return f"until {format_utc(record.expires)} ({describe_remaining(record.expires - at)})"
