"""``saslnetauth check``: ask the real decision engine and explain its verdict."""

from __future__ import annotations

import time

import click

from saslnetauth.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TEMPFAIL,
    AppContext,
    pass_app,
    read_password,
)
from saslnetauth.errors import BackendError
from saslnetauth.expiry import describe_expiry
from saslnetauth.netrules import parse_address
from saslnetauth.runtime import make_engine
from saslnetauth.verdict import Reason, Verdict

_EXPLAIN = {
    Reason.UNKNOWN_USER: "no such user",
    Reason.BAD_PASSWORD: "wrong password",
    Reason.EMPTY_PASSWORD: "empty password, refused before any check",
    Reason.NO_PASSWORD: "the user has no password",
    Reason.DISABLED: "the user is disabled",
    Reason.NETWORK: "the password is correct, but no allowed network contains the client address",
    Reason.NO_NETWORK_RULES: "the password is correct, but no network at all applies to this "
    "service for this user (fail closed)",
    Reason.BACKEND_ERROR: "temporary failure",
}


@click.command()
@click.argument("name")
@click.option(
    "--rip",
    metavar="IP",
    help="Client address to test. Omit it for a login without address (matches only 'local').",
)
@click.option("--service", default="smtp", show_default=True, metavar="SVC", help="Service name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_app
def check(app: AppContext, name: str, rip: str | None, service: str, password_stdin: bool) -> None:
    """Would user NAME with this password be accepted from --rip for --service?

    Runs the same decision engine as the server (nothing is logged to the
    auth log) and explains the verdict. Exit status: 0 accepted, 1 rejected,
    75 temporary failure.
    """
    password = read_password(from_stdin=password_stdin, confirm=False)
    try:
        store = app.store()
    except BackendError as exc:
        click.echo(f"TEMPFAIL: {exc}")
        raise click.exceptions.Exit(EXIT_TEMPFAIL) from None
    engine = make_engine(app.config, store)
    now = time.time()
    engine.clock = lambda: now  # the verdict and its explanation see the same time
    decision = engine.decide(name, password, rip, service, quiet=True)
    addr = parse_address(rip)
    where = str(addr) if addr is not None else "no address (local)"
    if rip and addr is None:
        where = f"{rip!r} (unparsable, treated as no address)"
    head = f"user {decision.user} from {where} for {service}"
    if decision.verdict is Verdict.OK:
        click.echo(f"ACCEPTED: {head}")
        click.echo(f"  allowed by: {decision.matched}")
        if decision.expires is not None:
            click.echo(f"  matched grant: {describe_expiry(decision.expires, now)}")
        raise click.exceptions.Exit(EXIT_OK)
    label = "TEMPFAIL" if decision.verdict is Verdict.TEMPFAIL else "REJECTED"
    click.echo(f"{label}: {head}")
    click.echo(f"  reason: {decision.reason.value} ({_EXPLAIN.get(decision.reason, '')})")
    if decision.detail:
        click.echo(f"  detail: {decision.detail}")
    if decision.reason in (Reason.NETWORK, Reason.NO_NETWORK_RULES):
        _list_applicable(store, decision.user, service, now)
    code = EXIT_TEMPFAIL if decision.verdict is Verdict.TEMPFAIL else EXIT_ERROR
    raise click.exceptions.Exit(code)


def _list_applicable(store: object, name: str, service: str, now: float) -> None:
    """The networks that apply to ``service``, and the expired grants that would."""
    from saslnetauth.store import SqlStore

    assert isinstance(store, SqlStore)
    user = store.get_user(name)
    rules = list(user.rules.rules if user else ()) + list(store.global_rules().rules)
    applicable = [r for r in rules if r.applies_to(service) and r.live(now)]
    expired = [r for r in rules if r.applies_to(service) and not r.live(now)]
    if applicable or not expired:
        click.echo(f"  networks that apply to {service}:")
    for rule in applicable[:20]:
        click.echo(f"    {rule.describe()}")
    if len(applicable) > 20:
        click.echo(f"    ... and {len(applicable) - 20} more")
    if expired:
        click.echo(f"  expired grants (they no longer apply to {service}):")
    for rule in expired[:20]:
        assert rule.expires is not None
        click.echo(f"    {rule.describe()}: {describe_expiry(rule.expires, now)}")
    if len(expired) > 20:
        click.echo(f"    ... and {len(expired) - 20} more")
