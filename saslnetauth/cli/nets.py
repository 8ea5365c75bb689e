"""``saslnetauth net ...``: global networks, which apply to every user."""

from __future__ import annotations

import time

import click

from saslnetauth.cli.common import AppContext, check_comment, emit_json, pass_app, print_table
from saslnetauth.cli.expiring import added_message, expiry_options, resolve_expiry, shown_expiry
from saslnetauth.netrules import NetworkRule, describe_services


@click.group()
def net() -> None:
    """Manage global networks (they admit every user, per service)."""


@net.command("add")
@click.argument("network", metavar="NET")
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="SVC",
    help="Limit to this service (repeatable). Default: all services.",
)
@click.option("--comment", metavar="TEXT", help="Free text kept with the network.")
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
    check_comment(comment)
    now = time.time()
    ends = resolve_expiry(expires, until, now)
    rule = NetworkRule.parse(network, services, scope="global", comment=comment, expires=ends)
    old = app.store().add_global_network(rule)
    what = f"global network {rule.spec}"
    click.echo(added_message(what, describe_services(rule.services), ends, old, now))


@net.command("del")
@click.argument("network", metavar="NET")
@pass_app
def delete(app: AppContext, network: str) -> None:
    """Remove global network NET."""
    app.store().delete_global_network(network)
    click.echo(f"global network {network} removed")


@net.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (shape: see README).")
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the global networks."""
    records = app.store().list_global_networks()
    now = time.time()
    if as_json:
        emit_json([r.to_json(now) for r in records])
        return
    print_table(
        ("network", "services", "expires", "comment"),
        (
            (
                r.network + (" [invalid]" if r.error else ""),
                describe_services(r.services, "all"),
                shown_expiry(r, now) or "never",
                r.comment or "",
            )
            for r in records
        ),
    )
