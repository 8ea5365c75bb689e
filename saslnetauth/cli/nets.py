"""``saslnetauth net ...``: global networks, which apply to every user."""

from __future__ import annotations

import time

import click

from saslnetauth.cli.common import (
    AppContext,
    comment_option,
    emit_records,
    json_array_option,
    pass_app,
    services_option,
)
from saslnetauth.cli.expiring import (
    added_message,
    expiry_options,
    new_grant,
    shown_expiry,
)
from saslnetauth.policy.rules.netrules import describe_services


@click.group()
def net() -> None:
    """Manage global networks (they admit every user, per service)."""


@net.command("add")
@click.argument("network", metavar="NET")
@services_option("Limit to this service (repeatable). Default: all services.")
@comment_option
@expiry_options
@pass_app
def add(
    app: AppContext,
    network: str,
    services: tuple[str, ...],
    comment: str | None,
    expires: str | None,
    until: str | None,
) -> None:
    """Admit every user from NET (192.0.2.0/24, 2001:db8::/32, local, any), for good
    or, with --expires/--until, until a time."""
    rule, ends, now = new_grant(network, services, "global", comment, expires, until)
    old = app.store().add_global_network(rule)
    what = f"global network {rule.spec}"
    click.echo(added_message(what, describe_services(rule.services), ends, old, now))
    from saslnetauth.cli.proxywarn import warn_if_proxy

    warn_if_proxy(app, rule)


@net.command("del")
@click.argument("network", metavar="NET")
@pass_app
def delete(app: AppContext, network: str) -> None:
    """Remove global network NET."""
    app.store().delete_global_network(network)
    click.echo(f"global network {network} removed")


@net.command("list")
@json_array_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the global networks."""
    now = time.time()
    emit_records(
        as_json,
        app.store().list_global_networks(),
        lambda r: r.to_json(now),
        ("network", "services", "expires", "comment"),
        lambda r: (
            r.network + (" [invalid]" if r.error else ""),
            describe_services(r.services, "all"),
            shown_expiry(r, now) or "never",
            r.comment or "",
        ),
    )
