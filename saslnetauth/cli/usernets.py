"""``saslnetauth user net ...``: one user's own networks."""

from __future__ import annotations

import click

from saslnetauth.cli.common import AppContext, comment_option, pass_app, services_option
from saslnetauth.cli.expiring import added_message, expiry_options, new_grant
from saslnetauth.cli.revoking import end_sessions, kick_network
from saslnetauth.events.revoke import RevokeEvent
from saslnetauth.policy.rules.netrules import describe_services


@click.group("net")
def user_net() -> None:
    """Add or remove networks of one user."""


@user_net.command("add")
@click.argument("name")
@click.argument("network", metavar="NET")
@services_option(
    "Limit to this service (repeatable): smtp, submission, imap, pop3, sieve... "
    "Default: all services."
)
@comment_option
@expiry_options
@pass_app
def net_add(
    app: AppContext,
    name: str,
    network: str,
    services: tuple[str, ...],
    comment: str | None,
    expires: str | None,
    until: str | None,
) -> None:
    """Allow user NAME to log in from NET (192.0.2.0/24, 2001:db8::/32, local, any),
    for good or, with --expires/--until, until a time (a grant for a trip)."""
    rule, ends, now = new_grant(network, services, "user", comment, expires, until)
    store = app.store()
    old = store.add_user_network(name, rule)
    what = f"user {store.name(name)}: network {rule.spec}"
    click.echo(added_message(what, describe_services(rule.services), ends, old, now))
    from saslnetauth.cli.proxywarn import warn_if_proxy

    warn_if_proxy(app, rule)


@user_net.command("del")
@click.argument("name")
@click.argument("network", metavar="NET")
@pass_app
def net_del(app: AppContext, name: str, network: str) -> None:
    """Remove network NET from user NAME and end its sessions from there ([revoke]
    command)."""
    store = app.store()
    store.delete_user_network(name, network)
    click.echo(f"user {store.name(name)}: network {network} removed")
    end_sessions(
        app, RevokeEvent("network_removed", store.name(name), network=kick_network(network))
    )
