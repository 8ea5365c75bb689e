"""``saslnetauth user app-password ...``: per-device passwords (docs/app-passwords.md)."""

from __future__ import annotations

import time
from datetime import datetime

import click

from saslnetauth.cli.common import (
    AppContext,
    emit_json,
    emit_records,
    json_array_option,
    json_object_option,
    pass_app,
    services_option,
)
from saslnetauth.cli.expiring import resolve_expiry
from saslnetauth.cli.revoking import end_sessions
from saslnetauth.cli.sending import limit_options, parse_limits
from saslnetauth.credentials.apptokens import check_label, new_token
from saslnetauth.events.revoke import RevokeEvent
from saslnetauth.policy.model import AppPasswordRecord
from saslnetauth.policy.rules.expiry import to_datetime
from saslnetauth.policy.rules.netrules import NetworkRule, describe_services, parse_services

__all__ = ["app_password"]


@click.group("app-password")
def app_password() -> None:
    """Per-device passwords of a user (a phone, a mail client).

    Each has a label, its own services and networks (plus the global networks
    for those services; the user's own networks do not apply to it) and an
    optional expiry. It is generated and shown once; saslnetauth keeps only
    a hash.
    """


@app_password.command("add")
@click.argument("name")
@click.option("--label", required=True, metavar="LABEL", help="Name of the device: phone, laptop.")
@services_option(
    "Limit it to this service (repeatable): imap, pop3, smtp, submission... Default: all services."
)
@click.option(
    "--net",
    "nets",
    multiple=True,
    metavar="NET",
    help="Network it may log in from (repeatable): 192.0.2.0/24, 2001:db8::/32, local, any. "
    "Without --net: the global networks only.",
)
@click.option(
    "--expires", metavar="DURATION", help="Stop working DURATION from now: 30m, 8h, 90d, 2w."
)
@click.option(
    "--until",
    metavar="TIME",
    help="Stop working at TIME: ISO 8601 with a time zone, e.g. 2026-12-04T18:00Z or "
    "2026-12-04T19:00+01:00 (as for a network's --until).",
)
@limit_options
@json_object_option
@pass_app
def add(
    app: AppContext,
    /,
    name: str,
    label: str,
    services: tuple[str, ...],
    nets: tuple[str, ...],
    expires: str | None,
    until: str | None,
    as_json: bool,
    **limits: str | None,
) -> None:
    """Create app password LABEL for user NAME and print it, once.

    Type it into the device as its password (dashes and case do not
    matter). It cannot be shown again: lost, delete it and add a new one.
    """
    check_label(label)
    wanted = parse_services(services)
    rules = [NetworkRule.parse(n, wanted, scope=f"app password {label}") for n in nets]
    ends = resolve_expiry(expires, until, time.time())  # one parser with the grants'
    expires_at = to_datetime(ends) if ends is not None else None
    own_limits = parse_limits(limits)  # a bad number stops it before the row is written
    store = app.store()
    token = store.add_app_password(
        name, label, new_token, services=wanted, networks=rules, expires=ends
    )
    if own_limits:
        store.set_sending_limits(name, label, own_limits)
    key = store.name(name)
    when = f"{expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "never"
    if not rules:
        click.echo(
            f"saslnetauth: note: app password {label} has no networks of its own: it works "
            "only from the global networks for its services (add some with --net)",
            err=True,
        )
    if as_json:
        emit_json(
            {
                "user": key,
                "label": label,
                "password": token,
                "services": sorted(wanted) if wanted else [],
                "networks": [r.spec for r in rules],
                "expires_at": expires_at.isoformat() if expires_at else None,
            }
        )
        return
    click.echo(
        f"app password {label} of {key} added (services: {describe_services(wanted)}; "
        f"networks: {', '.join(r.spec for r in rules) or 'global only'}; expires: {when})"
    )
    click.echo("password (shown once; type it into the device, dashes and case do not matter):")
    click.echo(f"  {token}")


@app_password.command("list")
@click.argument("name")
@json_array_option
@pass_app
def list_(app: AppContext, name: str, as_json: bool) -> None:
    """List the app passwords of user NAME (never their secrets)."""
    _, records = app.store().list_app_passwords(name)
    now = time.time()
    emit_records(
        as_json,
        records,
        lambda r: r.to_json(now),
        ("label", "services", "networks", "expires (UTC)", "created", "last used (UTC)"),
        lambda r: _row(r, now),
    )


@app_password.command("del")
@click.argument("name")
@click.argument("label")
@pass_app
def delete(app: AppContext, name: str, label: str) -> None:
    """Delete app password LABEL of user NAME (the next login with it fails) and end
    the user's sessions ([revoke] command)."""
    store = app.store()
    store.delete_app_password(name, label)
    click.echo(f"app password {label} of {store.name(name)} deleted")
    end_sessions(app, RevokeEvent("app_password_deleted", store.name(name), credential=label))


def _when(value: datetime | None, empty: str) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else empty


def _row(r: AppPasswordRecord, now: float) -> tuple[str, ...]:
    nets = [n.network + (" [invalid]" if n.error else "") for n in r.networks]
    ends = to_datetime(r.expires) if r.expires is not None else None
    expires = _when(ends, "never") + (" (expired)" if r.expired(now) else "")
    label = r.label + (f" [invalid: {r.error}]" if r.error else "")
    return (
        label,
        describe_services(r.services, "all"),
        ", ".join(nets) or "global only",
        expires,
        _when(r.created_at, "-"),
        _when(r.last_used_at, "never"),
    )
