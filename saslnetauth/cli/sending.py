"""``saslnetauth sending show``, ``user unsuspend`` and the limit options of ``user set``
and ``user app-password add`` (docs/sending.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from saslnetauth.cli.common import AppContext, emit_json, json_object_option, pass_app
from saslnetauth.errors import InvalidInputError, NotFoundError
from saslnetauth.sending import SENDING_LIMITS

__all__ = ["limit_options", "sending", "set_limits", "unsuspend"]

_HELP = {
    "messages_per_hour": "messages in a sliding hour",
    "recipients_per_hour": "recipients in a sliding hour",
    "messages_per_day": "messages in a sliding day",
    "recipients_per_day": "recipients in a sliding day",
}


def limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--messages-per-hour N ... : a number (0 = no limit) or 'default'."""
    for name in reversed(SENDING_LIMITS):
        flag = "--" + name.replace("_", "-")
        fn = click.option(
            flag,
            name,
            metavar="N",
            default=None,
            help=f"Most {_HELP[name]} (0 = no limit, 'default' = [sending]'s).",
        )(fn)
    return fn


def parse_limits(given: dict[str, str | None]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, text in given.items():
        if text is None:
            continue
        if text.strip().lower() == "default":
            out[name] = None
        elif text.strip().isascii() and text.strip().isdigit() and len(text.strip()) < 11:
            out[name] = int(text)
        else:
            raise InvalidInputError(f"--{name.replace('_', '-')}: a number or 'default'")
    return out


def set_limits(app: AppContext, name: str, label: str | None, given: dict[str, str | None]) -> bool:
    """Store the limit options given; False when none was."""
    limits = parse_limits(given)
    if not limits:
        return False
    store = app.store()
    store.set_sending_limits(name, label, limits)
    what = f"app password {label}" if label else "main password"
    shown = ", ".join(f"{k}={'default' if v is None else v}" for k, v in limits.items())
    click.echo(f"sending limits of {store.name(name)} ({what}): {shown}")
    return True


@click.command("unsuspend")
@click.argument("name")
@click.option("--app-password", "label", metavar="LABEL", help="Lift this app password's.")
@pass_app
def unsuspend(app: AppContext, name: str, label: str | None) -> None:
    """Lift the suspension of user NAME's main password (or of one app password)
    after it went over its sending limits too often."""
    store = app.store()
    what = f"app password {label}" if label else "main password"
    if store.unsuspend(name, label):
        click.echo(f"{what} of {store.name(name)} no longer suspended")
    else:
        click.echo(f"{what} of {store.name(name)} was not suspended")


@click.group()
def sending() -> None:
    """Sending limits after AUTH (docs/sending.md)."""


@sending.command("show")
@click.argument("name")
@json_object_option
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Explain the sending limits of user NAME: each credential's limits, where they
    come from, its counts (with [state] url; the embedded state is the server's own)
    and whether it is suspended."""
    from saslnetauth.sending.explain import explain

    store = app.store()
    row = store.sending_row(name)
    if row is None:
        raise NotFoundError(f"no such user: {store.name(name)}")
    import asyncio

    report = asyncio.run(explain(app.config, row, time.time()))
    if as_json:
        emit_json(report)
        return
    click.echo(f"user: {report['user']}")
    click.echo(f"counts: {report['counts_from']}")
    for cred in report["credentials"]:
        state = "SUSPENDED" if cred["suspended"] else "active"
        click.echo(f"  {cred['credential']}: {state}")
        for key, item in cred["limits"].items():
            counted = "" if item["count"] is None else f", now {item['count']}"
            outside = f", {item['outside']} from outside" if item["limit"] else ""
            shown = item["limit"] or "none"
            click.echo(f"    {key}: {shown} ({item['source']}{outside}{counted})")
