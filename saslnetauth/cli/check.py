"""``saslnetauth check``: ask the real decision engine and explain its verdict."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

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
from saslnetauth.policy.apppolicy import credential_rule_sets
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import AppPasswordRecord
from saslnetauth.policy.rules.addresses import parse_address
from saslnetauth.policy.rules.expiry import describe_expiry, format_utc
from saslnetauth.policy.rules.netrules import Address, describe_services
from saslnetauth.policy.verdict import Reason, Verdict

if TYPE_CHECKING:  # imported when the command runs: `check --help` stays light
    from saslnetauth.policy.engine import DecisionEngine
    from saslnetauth.policy.verdict import Decision
    from saslnetauth.store import SqlStore

_EXPLAIN = {
    Reason.UNKNOWN_USER: "no such user",
    Reason.BAD_PASSWORD: "wrong password",
    Reason.EMPTY_PASSWORD: "empty password, refused before any check",
    Reason.NO_PASSWORD: "the user has no password",
    Reason.DISABLED: "the user is disabled",
    Reason.NETWORK: "the password is correct, but no allowed network contains the client address",
    Reason.NO_NETWORK_RULES: "the password is correct, but no network at all applies to this "
    "service for this user (fail closed)",
    Reason.EXPIRED: "the app password is right, but it has expired",
    Reason.APP_PASSWORD_REQUIRED: "the main password is right, but it may not log in to this "
    "service: only the user's app passwords can (answered like a wrong password)",
    Reason.BACKEND_ERROR: "temporary failure",
    Reason.PROXY_WITHOUT_CLIENT_ADDRESS: "the password is correct, but a trusted proxy "
    "forwarded no client address and no webmail session of this user and credential is live "
    "(answered like a wrong password)",
}


@click.command()
@click.argument("name")
@click.option(
    "--rip",
    metavar="IP",
    help="Client address to test. Omit it for a login without address (matches only 'local').",
)
@click.option(
    "--proxy",
    metavar="IP",
    help="The connecting address when it forwarded --rip (Dovecot's real_rip): a trusted "
    "proxy ([proxies] networks) has the client judged by --rip.",
)
@click.option("--service", default="smtp", show_default=True, metavar="SVC", help="Service name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_app
def check(
    app: AppContext,
    name: str,
    rip: str | None,
    proxy: str | None,
    service: str,
    password_stdin: bool,
) -> None:
    """Would user NAME with this password be accepted from --rip for --service?

    Runs the same decision engine as the server (nothing is logged to the
    auth log, no webmail session is opened or ended) and explains the
    verdict, and which address was judged when proxies are configured.
    Exit status: 0 accepted, 1 rejected, 75 temporary failure.
    """
    password = read_password(from_stdin=password_stdin, confirm=False)
    try:
        store = app.store()
    except BackendError as exc:
        click.echo(f"TEMPFAIL: {exc}")
        raise click.exceptions.Exit(EXIT_TEMPFAIL) from None
    from saslnetauth.runtime import make_engine

    engine = make_engine(app.config, store)
    now = time.time()
    engine.clock = lambda: now  # the verdict and its explanation see the same time
    route = _read_only_proxies(engine, rip, proxy, service)
    login = Login.of(name, password, rip, service, real_rip=proxy)
    decision = engine.decide(login, quiet=True)
    if route is not None:
        click.echo(f"route: {route}")
    addr, where = _judged_where(engine, decision, login, proxy)
    head = f"user {decision.user} from {where} for {service}"
    label = decision.credential
    credential = f"app password {label}" if label else "main password"
    if decision.reason is Reason.UNKNOWN_USER:
        credential = "-"
    if decision.verdict is Verdict.OK:
        click.echo(f"ACCEPTED: {head}")
        click.echo(f"  credential: {credential}")
        click.echo(f"  allowed by: {decision.matched}")
        if decision.expires is not None:
            click.echo(f"  matched grant: {describe_expiry(decision.expires, now)}")
        _explain_geoip(engine, store, decision.user, addr, service)
        raise click.exceptions.Exit(EXIT_OK)
    verdict = "TEMPFAIL" if decision.verdict is Verdict.TEMPFAIL else "REJECTED"
    click.echo(f"{verdict}: {head}")
    click.echo(f"  credential: {credential}")
    apw = _app_password(store, decision.user, label) if label else None
    explain = _explain(decision.reason, apw, service)
    click.echo(f"  reason: {decision.reason.value} ({explain})")
    if decision.detail:
        click.echo(f"  detail: {decision.detail}")
    if decision.reason in (Reason.NETWORK, Reason.NO_NETWORK_RULES):
        _list_applicable(store, decision.user, service, apw, now)
    if decision.reason is Reason.APP_PASSWORD_REQUIRED:
        _explain_main(app, store, decision.user)
    _explain_geoip(engine, store, decision.user, addr, service)
    code = EXIT_TEMPFAIL if decision.verdict is Verdict.TEMPFAIL else EXIT_ERROR
    raise click.exceptions.Exit(code)


def _read_only_proxies(
    engine: DecisionEngine, rip: str | None, proxy: str | None, service: str
) -> str | None:
    """Which proxy case applies (None: no proxies configured, nothing forwarded); the
    engine's sessions are only read from here on."""
    from saslnetauth.policy.binding import ReadOnlyBindings

    if engine.binder is not None:
        engine.binder.store = ReadOnlyBindings(engine.binder.store)
    if not engine.proxies and proxy is None:
        return None
    return engine.proxies.route(rip, proxy, service.lower()).explain()


def _judged_where(
    engine: DecisionEngine, decision: Decision, login: Login, proxy: str | None
) -> tuple[Address | None, str]:
    """The address the engine judged and how the verdict names it."""
    rip, addr = login.rip, login.address
    if decision.proxy is not None:  # judged by the address the route names
        rip = decision_rip(engine, login.rip, proxy, login.service)
        addr = parse_address(rip)
    where = str(addr) if addr is not None else "no address (local)"
    if rip and addr is None:
        where = f"{rip!r} (unparsable, treated as no address)"
    if decision.proxy is not None:
        where = f"{where} through proxy {decision.proxy}" if rip else f"proxy {decision.proxy}"
    return addr, where


def decision_rip(
    engine: DecisionEngine, rip: str | None, proxy: str | None, service: str
) -> str | None:
    """The address the engine judged (None: none known)."""
    return engine.proxies.route(rip, proxy, service.lower()).rip


def _explain(reason: Reason, apw: AppPasswordRecord | None, service: str) -> str:
    if apw is not None and reason is Reason.NO_NETWORK_RULES:
        if not apw.applies_to(service):
            limited = describe_services(apw.services)
            return f"the app password is right, but it is limited to {limited}"
        return (
            "the app password is right, but it has no network of its own and no global "
            "network applies to this service"
        )
    if apw is not None and reason is Reason.EXPIRED and apw.expires is not None:
        return f"the app password is right, but it expired at {format_utc(apw.expires)}"
    if apw is not None and reason is Reason.NETWORK:
        return (
            "the app password is right, but the client address is in none of its networks "
            "nor in a global network for this service"
        )
    return _EXPLAIN.get(reason, "")


def _explain_main(app: AppContext, store: SqlStore, name: str) -> None:
    """Where the main password of ``name`` works, and where that setting comes from."""
    from saslnetauth.policy.mainpassword import describe_main_services, parse_main_services

    user = store.get_user(name)
    stored = user.main_password_services if user is not None else None
    if stored is None:
        default = app.config.passwords.main_password_services
        where = describe_main_services(parse_main_services(default))
        click.echo(f"  main password services: {where} ([passwords] main_password_services)")
        return
    try:
        where = describe_main_services(parse_main_services(stored))
    except ValueError:
        where = f"INVALID {stored!r} (so none)"
    click.echo(f"  main password services: {where} (user set --main-password-services)")


def _explain_geoip(
    engine: DecisionEngine, store: object, name: str, addr: Address | None, service: str
) -> None:
    """Where the address is, when the GeoIP databases are configured or a country or
    ASN term applies; and why such terms cannot match (fail closed)."""
    from saslnetauth.policy.rules.geoip import FOUND
    from saslnetauth.store import SqlStore

    assert isinstance(store, SqlStore)
    geoip = engine.geoip
    try:
        user = store.get_user(name)
        sets = [store.global_rules()] + ([user.rules] if user is not None else [])
    except BackendError:
        sets = []
    terms = any(rules.wants_geo(service) for rules in sets)
    if geoip is None or not geoip.configured:
        if terms:
            click.echo(
                "  geoip: no [geoip] database is configured: country and ASN terms match nothing"
            )
        return
    if addr is None:
        if terms:
            click.echo("  geoip: no client address: country and ASN terms match nothing")
        return
    geo, status = geoip.locate(addr)
    found = [f"country {geo.country}" if geo.country else "", f"AS{geo.asn}" if geo.asn else ""]
    click.echo(f"  geoip: {', '.join(f for f in found if f) or 'nothing known'} ({status})")
    if status != FOUND:
        for state in geoip.states():
            if not state.path:
                continue
            if not state.loaded:
                click.echo(f"    {state.describe()}: its terms match nothing")
            elif (state.kind == "country" and geo.country is None) or (
                state.kind == "asn" and geo.asn is None
            ):
                click.echo(
                    f"    {state.kind} database {state.path} does not know {addr}: "
                    f"{state.kind} terms do not match it"
                )


def _app_password(store: SqlStore, name: str, label: str) -> AppPasswordRecord | None:
    user = store.get_user(name)
    return next((a for a in user.app_passwords if a.label == label), None) if user else None


def _list_applicable(
    store: SqlStore, name: str, service: str, app: AppPasswordRecord | None, now: float
) -> None:
    """The networks that could have admitted this credential for ``service``, and the
    expired grants that would have."""
    if app is not None:
        rules = [r for rs in credential_rule_sets(app, store.global_rules(), service) for r in rs]
    else:
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
