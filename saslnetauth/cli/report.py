"""``saslnetauth report``: what the server saw recently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from saslnetauth.cli.common import AppContext, emit_json, json_object_option, pass_app
from saslnetauth.policy.rules.expiry import parse_duration


@click.command()
@click.option(
    "--since",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="How far back: 30m, 24h, 7d, 2w.",
)
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Entries in the top lists.",
)
@json_object_option
@pass_app
def report(app: AppContext, since: str, top: int, as_json: bool) -> None:
    """Summarise the server's recent verdicts.

    Shows verdict counts, failures per service and reason, the client
    addresses and networks (/24, /48) that failed most, failures by country
    and by autonomous system (when [geoip] databases are configured), and
    the users whose correct password was used from a forbidden network
    (likely stolen credentials), logins per trusted proxy and the failures
    of proxies that forwarded no client address. Reads the record
    `saslnetauth serve` keeps ([report] record = true, the default).

    For the sending limits (docs/sending.md): every deferral and suspension in
    the period (from the same record), and the top senders per user and
    credential, messages and recipients in the sliding hour and day (from the
    state store of [state] url; the embedded state lives in the server).
    """
    from saslnetauth.store.events import build_report

    start = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
    rep = build_report(app.store(), start)
    data = rep.to_json(top)
    data["top_senders_from"], data["top_senders"] = _top_senders(app, top)
    if as_json:
        emit_json(data)
        return
    click.echo(f"since {start:%Y-%m-%d %H:%M} UTC")
    verdicts = data["verdicts"]
    assert isinstance(verdicts, dict)
    click.echo(
        "verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())) or "none")
    )
    _section("failures by service", data["failures_by_service"])
    _section("failures by reason", data["failures_by_reason"])
    _rows("top denied addresses", data["top_denied_addresses"], "address")
    _rows("top denied networks", data["top_denied_networks"], "network")
    _rows("failures by country", data["failures_by_country"], "country")
    _rows("failures by ASN", data["failures_by_asn"], "asn", prefix="AS")
    by_proxy = data["logins_by_proxy"]
    assert isinstance(by_proxy, dict)
    click.echo("logins through trusted proxies:" + ("" if by_proxy else " none"))
    for proxy, counts in by_proxy.items():
        click.echo(f"  {proxy:<40} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"proxy without client address: {data['proxy_without_client_address']} failures")
    stolen = data["stolen_credentials"]
    assert isinstance(stolen, list)
    click.echo(
        "correct password from a forbidden network (likely stolen):" + ("" if stolen else " none")
    )
    for s in stolen:
        who = f"{s['user']} (app password {s['credential']})" if s["credential"] else s["user"]
        click.echo(
            f"  {who} from {s['address']}: {s['count']} times, last {s['last']}, "
            f"services {','.join(s['services'])}"
        )
    _sending(data)


def _top_senders(app: AppContext, top: int) -> tuple[str, list[dict[str, object]] | None]:
    """Where the top senders come from, and them (None: not readable here)."""
    cfg = app.config
    if not cfg.state.url:
        return "the running server (embedded state: not readable here)", None
    import asyncio
    import time

    from saslnetauth.sending.state import StateError
    from saslnetauth.sending.top import top_senders

    where = "state store " + cfg.state.url.split("@")[-1]
    try:
        return where, asyncio.run(top_senders(cfg.state.url, cfg.state.prefix, top, time.time()))
    except StateError as exc:
        return f"{where}: unavailable ({exc})", None


def _sending(data: dict[str, object]) -> None:
    senders = data["top_senders"]
    click.echo(f"top senders (last hour / last day), from {data['top_senders_from']}:"
               + (" none" if senders == [] else ""))  # fmt: skip
    for r in senders if isinstance(senders, list) else []:
        click.echo(
            f"  {r['user']} {r['credential']}: messages {r['messages_hour']} / "
            f"{r['messages_day']}, recipients {r['recipients_hour']} / {r['recipients_day']}"
        )
    for title, key in (("sending deferrals", "sending_deferrals"),
                       ("sending suspensions", "sending_suspensions")):  # fmt: skip
        rows = data[key]
        assert isinstance(rows, list)
        click.echo(f"{title}:" + ("" if rows else " none"))
        for r in rows:
            click.echo(
                f"  {r['time']} {r['user']} {r['credential']} from {r['client']}: {r['limit']}"
            )


def _section(title: str, counts: object) -> None:
    assert isinstance(counts, dict)
    click.echo(f"{title}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))


def _rows(title: str, rows: object, key: str, prefix: str = "") -> None:
    assert isinstance(rows, list)
    click.echo(f"{title}:" + ("" if rows else " none"))
    for r in rows:
        click.echo(f"  {prefix + str(r[key]):<40} {r['failures']}")
