"""``saslnetauth geoip ...``: what the GeoIP databases say, and whether they are current."""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import click

from saslnetauth.cli.common import EXIT_ERROR, EXIT_OK, AppContext, emit_json, pass_app
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.rules.netrules import parse_address


@click.group()
def geoip() -> None:
    """Look addresses up in the GeoIP databases ([geoip] country_db, asn_db)."""


def _locator(app: AppContext) -> Any:
    from saslnetauth.policy.rules.geoip import GeoLocator

    return GeoLocator(app.config.geoip)


@geoip.command("lookup")
@click.argument("address", metavar="IP")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_app
def lookup(app: AppContext, address: str, as_json: bool) -> None:
    """What the databases say about IP: its country and autonomous system.

    An IPv4-mapped IPv6 address is looked up as IPv4, like a login's. Exit
    status 0 when every configured database knew the address, 1 otherwise
    (not in a database, a database not loaded, or none configured).
    """
    from saslnetauth.policy.rules.geoip import FOUND

    addr = parse_address(address)
    if addr is None:
        raise InvalidInputError(f"invalid IP address {address!r}")
    locator = _locator(app)
    ip = IPv4Address(addr.value) if addr.version == 4 else IPv6Address(addr.value)
    geo, status = locator.locate(addr)
    databases: dict[str, dict[str, Any]] = {}
    for kind, db in locator.databases.items():
        entry: dict[str, Any] = {"path": db.path or None, "loaded": db.reader is not None}
        if db.reader is not None:
            entry.update(_what(kind, db.reader, ip))
        else:
            entry["error"] = db.state.error if db.path else "not configured"
        databases[kind] = entry
    out = {
        "address": str(addr),
        "country": geo.country,
        "asn": geo.asn,
        "status": status if locator.configured else "unavailable",
        "databases": databases,
    }
    if as_json:
        emit_json(out)
    else:
        click.echo(f"address {addr}")
        c, a = databases["country"], databases["asn"]
        if c["loaded"]:
            where = f" (network {c['network']})" if c["network"] else ""
            name = f" {c['name']}" if c["name"] else ""
            click.echo(f"  country: {geo.country or 'not known'}{name}{where}")
        else:
            click.echo(f"  country: no database ({c['error']})")
        if a["loaded"]:
            where = f" (network {a['network']})" if a["network"] else ""
            org = f" {a['organization']}" if a["organization"] else ""
            number = f"AS{geo.asn}" if geo.asn else "not known"
            click.echo(f"  asn: {number}{org}{where}")
        else:
            click.echo(f"  asn: no database ({a['error']})")
    raise click.exceptions.Exit(EXIT_OK if locator.configured and status == FOUND else EXIT_ERROR)


def _what(kind: str, reader: Any, ip: IPv4Address | IPv6Address) -> dict[str, Any]:
    """The matching network and the names the record holds."""
    try:
        record, prefix = reader.get_with_prefix_len(ip)
    except ValueError:  # IPv6 in an IPv4-only database
        record, prefix = None, 0
    out: dict[str, Any] = {"network": _network(ip, prefix) if record is not None else None}
    if kind == "country":
        out["name"] = _english(record, "country")
    else:
        org = record.get("autonomous_system_organization") if isinstance(record, dict) else None
        out["organization"] = org if isinstance(org, str) else None
    return out


def _network(ip: IPv4Address | IPv6Address, prefix: int) -> str:
    from ipaddress import ip_network

    if isinstance(ip, IPv4Address) and prefix > 32:  # found in an IPv6 tree's IPv4 part
        prefix -= 96
    return str(ip_network(f"{ip}/{prefix}", strict=False))


def _english(record: Any, key: str) -> str | None:
    part = record.get(key) if isinstance(record, dict) else None
    names = part.get("names") if isinstance(part, dict) else None
    name = names.get("en") if isinstance(names, dict) else None
    return name if isinstance(name, str) else None


@geoip.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """The configured databases: loaded or not, type, build date and age.

    Exit status 0 when every configured database is loaded and not older than
    [geoip] max_age_days; 1 otherwise (for a monitoring check or a cron job).
    With no database configured there is nothing to check: 0.
    """
    locator = _locator(app)
    max_age = app.config.geoip.max_age_days
    now = time.time()
    healthy = True
    rows: list[dict[str, Any]] = []
    for state in locator.states():
        age = state.age_days(now)
        old = bool(max_age) and age is not None and age > max_age
        if state.path and (not state.loaded or old):
            healthy = False
        rows.append(
            {
                "database": state.kind,
                "path": state.path or None,
                "loaded": state.loaded,
                "error": state.error if state.path else "not configured",
                "type": state.database_type,
                "build_epoch": state.build_epoch,
                "age_days": round(age, 1) if age is not None else None,
                "old": old,
            }
        )
        if as_json:
            continue
        click.echo(state.describe())
        if age is not None:
            note = f"; OLDER THAN max_age_days = {max_age}: update it" if old else ""
            click.echo(f"  age {age:.1f} days{note}")
    if as_json:
        emit_json(rows)
    raise click.exceptions.Exit(EXIT_OK if healthy else EXIT_ERROR)
