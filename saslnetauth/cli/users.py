"""``saslnetauth user ...``: manage users and their own networks."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from saslnetauth.cli.apppw import app_password
from saslnetauth.cli.common import (
    AppContext,
    emit_json,
    emit_records,
    json_array_option,
    json_object_option,
    pass_app,
    read_password,
)
from saslnetauth.cli.expiring import (
    shown_expiry,
)
from saslnetauth.cli.revoking import end_sessions
from saslnetauth.cli.sending import limit_options, set_limits, unsuspend
from saslnetauth.cli.usernets import user_net
from saslnetauth.errors import InvalidInputError
from saslnetauth.events.revoke import RevokeEvent
from saslnetauth.policy.mainpassword import (
    describe_main_services,
    format_main_services,
    parse_main_services,
)
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule, describe_services


def _password_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--hash",
        "hash_",
        metavar="HASH",
        help="Store this ready-made hash, e.g. '{SHA512-CRYPT}$6$...' from `doveadm pw`.",
    )(fn)
    fn = click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input.",
    )(fn)
    return fn


def _new_hash(app: AppContext, password_stdin: bool, hash_: str | None) -> str:
    from saslnetauth.credentials.passwords import PLAINTEXT_SCHEMES
    from saslnetauth.runtime import make_hasher

    hasher = make_hasher(app.config)
    if hash_ is not None:
        if password_stdin:
            raise click.UsageError("use either --password-stdin or --hash, not both")
        parsed = hasher.parse(hash_)
        if parsed.scheme in PLAINTEXT_SCHEMES:
            click.echo(
                f"saslnetauth: warning: storing a plaintext password ({{{parsed.scheme}}}); "
                "prefer a real hash",
                err=True,
            )
        return parsed.stored
    return hasher.hash(read_password(from_stdin=password_stdin, confirm=True))


@click.group()
def user() -> None:
    """Add, change, list and remove users."""


@user.command("add")
@click.argument("name")
@_password_options
@click.option(
    "--no-password", is_flag=True, help="Create the user without a password (no login works)."
)
@click.option(
    "--pam",
    "use_pam",
    is_flag=True,
    help="Check this user's password with PAM (needs [pam] enabled = true) instead of a hash.",
)
@click.option(
    "--net",
    "nets",
    multiple=True,
    metavar="NET",
    help="Allowed network for every service (repeatable): 192.0.2.0/24, 2001:db8::/32, "
    "192.0.2.7, local or any.",
)
@click.option("--disabled", is_flag=True, help="Create the user disabled.")
@pass_app
def add(
    app: AppContext,
    name: str,
    password_stdin: bool,
    hash_: str | None,
    no_password: bool,
    use_pam: bool,
    nets: tuple[str, ...],
    disabled: bool,
) -> None:
    """Add user NAME with a password (prompted, --password-stdin or --hash).

    Without --net (and without a matching global network) the user cannot
    log in from anywhere: access must be granted explicitly.
    """
    rules = [NetworkRule.parse(n, scope="user") for n in nets]
    store = app.store()
    if no_password or use_pam:
        if password_stdin or hash_ or (no_password and use_pam):
            raise click.UsageError(
                "--no-password and --pam exclude each other, --password-stdin and --hash"
            )
        phash = None
    else:
        store.name(name)  # validate the name before asking for a password
        phash = _new_hash(app, password_stdin, hash_)
    backend = "pam" if use_pam else "hash"
    key = store.add_user(name, phash, enabled=not disabled, networks=rules, backend=backend)
    if use_pam and not app.config.pam.enabled:
        click.echo(
            "saslnetauth: warning: [pam] enabled is false: this user's logins fail "
            "temporarily until PAM is enabled",
            err=True,
        )
    from saslnetauth.cli.proxywarn import warn_if_proxy

    for rule in rules:
        warn_if_proxy(app, rule)
    nets_txt = ", ".join(r.spec for r in rules) or "none"
    click.echo(f"user {key} added ({'disabled' if disabled else 'enabled'}; networks: {nets_txt})")


@user.command("passwd")
@click.argument("name")
@_password_options
@pass_app
def passwd(app: AppContext, name: str, password_stdin: bool, hash_: str | None) -> None:
    """Set the password of user NAME (prompted, --password-stdin or --hash)."""
    store = app.store()
    record = store.get_user(name)
    if record is None:
        from saslnetauth.errors import NotFoundError

        raise NotFoundError(f"no such user: {store.name(name)}")
    if record.backend == "pam":
        raise InvalidInputError(f"user {record.name} is checked by PAM: change the password there")
    store.set_password(name, _new_hash(app, password_stdin, hash_))
    click.echo(f"password of {store.name(name)} changed")
    end_sessions(app, RevokeEvent("password_changed", store.name(name)))


@user.command("enable")
@click.argument("name")
@pass_app
def enable(app: AppContext, name: str) -> None:
    """Allow user NAME to log in again."""
    store = app.store()
    store.set_enabled(name, True)
    click.echo(f"user {store.name(name)} enabled")


@user.command("disable")
@click.argument("name")
@pass_app
def disable(app: AppContext, name: str) -> None:
    """Refuse every login of user NAME (the user and its networks are kept) and end
    its sessions ([revoke] command)."""
    store = app.store()
    store.set_enabled(name, False)
    click.echo(f"user {store.name(name)} disabled")
    end_sessions(app, RevokeEvent("user_disabled", store.name(name)))


@user.command("set")
@click.argument("name")
@click.option(
    "--main-password-services",
    "main_services",
    metavar="SERVICES",
    help="Where the main password may log in: 'all', 'none', services such as "
    "'smtp,submission', or 'default' ([passwords] main_password_services). Elsewhere "
    "only the user's app passwords work.",
)
@limit_options
@pass_app
def set_(app: AppContext, /, name: str, main_services: str | None, **limits: str | None) -> None:
    """Change settings of user NAME: where its main password works, its sending limits."""
    store = app.store()
    if main_services is None and not any(v is not None for v in limits.values()):
        raise click.UsageError("nothing to set: give --main-password-services or a limit")
    if main_services is not None:
        stored = None
        if main_services.strip().lower() != "default":
            stored = format_main_services(parse_main_services(main_services))
        store.set_main_password_services(name, stored)
        click.echo(f"main password of {store.name(name)}: {_main(app, stored)}")
    set_limits(app, name, None, limits)


def _main(app: AppContext, stored: str | None) -> str:
    """Where the main password works, and whether it is the user's own setting."""
    if stored is None:
        default = app.config.passwords.main_password_services
        return f"{describe_main_services(parse_main_services(default))} (the default)"
    try:
        return describe_main_services(parse_main_services(stored))
    except ValueError:
        return f"INVALID {stored!r}: the main password works nowhere until it is fixed"


@user.command("del")
@click.argument("name")
@pass_app
def delete(app: AppContext, name: str) -> None:
    """Delete user NAME and its networks, and end its sessions ([revoke] command)."""
    store = app.store()
    store.delete_user(name)
    click.echo(f"user {store.name(name)} deleted")
    end_sessions(app, RevokeEvent("user_deleted", store.name(name)))


@user.command("kick")
@click.argument("name")
@click.option(
    "--app-password",
    "label",
    metavar="LABEL",
    help="Name this app password in {credential} (Dovecot 2.3 cannot tell its sessions "
    "apart: doveadm kick ends all of the user's).",
)
@pass_app
def kick(app: AppContext, name: str, label: str | None) -> None:
    """End the live sessions of user NAME now: run the [revoke] command once.

    Exits 1 when no command is configured or it failed.
    """
    key = app.store().name(name)
    outcome = end_sessions(app, RevokeEvent("kick", key, credential=label or ""))
    if outcome is None:
        raise click.ClickException("no [revoke] command configured (docs/revoke.md)")
    if not outcome.ok:
        raise SystemExit(1)


@user.command("list")
@json_array_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List all users with their state and networks."""
    emit_records(
        as_json,
        app.store().list_users(),
        lambda u: u.to_json(),
        ("user", "state", "password", "networks"),
        lambda u: (u.name, _state(u), _pw(u), _nets(u)),
    )


@user.command("show")
@click.argument("name")
@json_object_option
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Show user NAME: state, password scheme, networks, app passwords and retired
    passwords (when each was replaced and last tried by a failed login)."""
    store = app.store()
    u = store.get_user(name, details=True)
    if u is None:
        from saslnetauth.errors import NotFoundError

        raise NotFoundError(f"no such user: {store.name(name)}")
    retired = store.retired_passwords(u.name)
    if as_json:
        emit_json({**u.to_json(), "retired_passwords": [_retired_json(r) for r in retired]})
        return
    click.echo(f"user:     {u.name}")
    click.echo(f"state:    {_state(u)}")
    click.echo(f"password: {_pw(u)}")
    click.echo(f"main password services: {_main(app, u.main_password_services)}")
    if u.suspended:  # docs/sending.md
        click.echo("SUSPENDED: main password (sent too much; saslnetauth user unsuspend)")
    click.echo(f"created:  {u.created_at}")
    click.echo(f"updated:  {u.updated_at}")
    click.echo("networks:" + ("" if u.networks else " none"))
    for n in u.networks:
        svc = describe_services(n.services)
        line = f"  {n.network}  ({svc})"
        if n.expires is not None:
            line += f"  {shown_expiry(n)}"
        if n.comment:
            line += f"  # {n.comment}"
        if n.error:
            line += f"  INVALID, ignored: {n.error}"
        click.echo(line)
    _, apps = store.list_app_passwords(u.name)
    click.echo("app passwords:" + ("" if apps else " none"))
    for a in apps:  # they admit from their own networks: part of where this user logs in
        nets = ", ".join(n.network for n in a.networks if not n.error) or "global only"
        mark = "  SUSPENDED" if a.suspended else ""
        click.echo(f"  {a.label}  ({describe_services(a.services)}; {nets}){mark}")
    click.echo("retired passwords:" + ("" if retired else " none"))
    for r in retired:  # a failed login with one: reason=retired_password
        tried = r["last_tried_at"]
        click.echo(
            f"  retired {_utc(r['retired_at'])}, last tried "
            + (_utc(tried) if tried is not None else "never")
        )


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retired_json(r: dict[str, datetime | None]) -> dict[str, str | None]:
    return {k: (v.isoformat() if v is not None else None) for k, v in r.items()}


user.add_command(app_password)
user.add_command(unsuspend)


def _state(u: UserRecord) -> str:
    return "enabled" if u.enabled else "disabled"


def _pw(u: UserRecord) -> str:
    if u.backend == "pam":
        return "PAM"
    if u.password_hash is None:
        return "none"
    return str(u.to_json()["scheme"] or "?")


def _nets(u: UserRecord) -> str:
    parts = []
    for n in u.networks:
        text = n.network
        if n.services:
            text += f" ({describe_services(n.services)})"
        if n.expires is not None:
            text += f" [{shown_expiry(n)}]"
        if n.error:
            text += " [invalid]"
        parts.append(text)
    return ", ".join(parts) or "-"


user.add_command(user_net)
