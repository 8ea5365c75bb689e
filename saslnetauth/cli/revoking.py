"""The command line's side of ending sessions on revoke (:mod:`saslnetauth.events.revoke`):
after a command revoked something, end the user's webmail sessions
(:mod:`saslnetauth.store.webmail`), run the ``[revoke] command`` once and say so."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from saslnetauth.cli.common import AppContext
from saslnetauth.events.revoke import RevokeEvent, kick_network, revoke_argv, revoke_environment

if TYPE_CHECKING:  # subprocess and asyncio: imported when a command is run
    from saslnetauth.events.commands import Outcome

__all__ = ["end_sessions", "kick_network"]


def end_sessions(app: AppContext, event: RevokeEvent) -> Outcome | None:
    """Run the revoke command for ``event`` (the change is already committed) and
    print one line on standard error (the command line's log: no second line through
    logging); None when no command is configured. Never raises for a failed command:
    the revocation itself stands."""
    _end_webmail_sessions(app, event.user)
    cfg = app.config.revoke
    argv = revoke_argv(cfg.command, event)
    if argv is None:
        return None
    from saslnetauth.events.commands import run_now

    env = revoke_environment(event)
    outcome = run_now(argv, env, timeout=cfg.timeout, ok_status=cfg.ok_status)
    shown = " ".join(argv)
    who = f"{event.user}" + (f" ({event.credential})" if event.credential else "")
    if outcome.ok and outcome.status == 0:
        click.echo(f"saslnetauth: sessions of {who} ended: {shown}: exit 0", err=True)
    elif outcome.ok:  # [revoke] ok_status: doveadm kick's "no users kicked"
        click.echo(
            f"saslnetauth: no live sessions of {who}: {shown}: exit {outcome.status}", err=True
        )
    else:
        status = outcome.kind if outcome.status is None else f"exit {outcome.status}"
        detail = f" ({outcome.error})" if outcome.error else ""
        click.echo(
            f"saslnetauth: warning: ending the sessions of {who} failed: {shown}: {status}{detail}",
            err=True,
        )
    return outcome


def _end_webmail_sessions(app: AppContext, name: str) -> None:
    """Every revocation of a user ends the user's webmail sessions at once
    (docs/webmail.md); the use-time checks would refuse them anyway, this also covers
    the logins that still see the user as it was (global_cache_seconds)."""
    if not name or not app.config.proxies.networks:
        return
    from saslnetauth.store.webmail import WebmailSessions

    try:
        store = app.store()
        user = store.get_user(name)
        if user is not None and WebmailSessions(store).end_all(user.id):
            click.echo(f"saslnetauth: webmail sessions of {name} ended", err=True)
    except Exception as exc:  # the revocation itself stands
        click.echo(f"saslnetauth: warning: webmail sessions of {name} not ended: {exc}", err=True)
