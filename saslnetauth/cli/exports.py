"""``saslnetauth export ...``: users out, in bulk (the import is :mod:`saslnetauth.cli.imports`).

Format: :mod:`saslnetauth.admin.exporters` (Dovecot passwd-file with ``allow_nets``),
written with :func:`saslnetauth.admin.atomicfile.write_atomic`.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from saslnetauth.cli.common import AppContext, pass_app, services_option
from saslnetauth.errors import InvalidInputError
from saslnetauth.runtime import make_hasher

if TYPE_CHECKING:
    from saslnetauth.admin.exporters import ExportResult


@click.group("export")
def export_group() -> None:
    """Write users out for other software (Dovecot 2.4 passwd-file)."""


@export_group.command("dovecot-passwd-file")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@services_option("Service the file is for (repeatable). Default: imap and pop3.")
@pass_app
def export_dovecot_passwd_file(app: AppContext, file: str, services: tuple[str, ...]) -> None:
    """Write a Dovecot passwd-file with allow_nets, for Dovecot 2.4 (no checkpassword).

    \b
    One line per enabled user with a password hash:
      alice:{ARGON2ID}$argon2id$...::::::allow_nets=192.0.2.0/24,0.0.0.0/0,::/0,local
    allow_nets = the user's networks + the global networks, each only if
    it applies to EVERY --service (a network limited to services is left
    out unless its services include them all); any becomes
    0.0.0.0/0,::/0; local stays local. A user with no
    such network gets allow_nets=255.255.255.255/32, which no client can
    match (fail closed). Disabled users, PAM users, users without a
    password and users whose main password may not log in to every
    --service (user set --main-password-services) are not written, nor app
    passwords (counted in the summary).

    A passwd-file holds one allow_nets per user, so export one file per set
    of services (e.g. --service imap --service pop3, and another for
    --service smtp) and let Dovecot pick it, e.g. with %s (2.3) in the path.

    FILE is replaced atomically (mode 0640 when new, else its mode and
    owner are kept); a FILE that is a symbolic link is refused, never
    followed; - writes to standard output. Re-run it after changes.
    """
    from saslnetauth.admin.exporters import DEFAULT_EXPORT_SERVICES, dovecot_passwd_file
    from saslnetauth.policy.mainpassword import parse_main_services
    from saslnetauth.policy.rules.netrules import parse_services

    wanted = parse_services(services) or frozenset(DEFAULT_EXPORT_SERVICES)
    store = app.store()
    now = time.time()
    main_default = parse_main_services(app.config.passwords.main_password_services)
    result = dovecot_passwd_file(
        store.list_users(),
        store.global_rules(),
        wanted,
        make_hasher(app.config),
        now=now,
        main_default=main_default,
    )
    to_stdout = file == "-"
    changed = _write(file, result.text)
    svc = ", ".join(sorted(wanted))
    where = "standard output" if to_stdout else file
    lines = [f"exported {len(result.lines)} user(s) to {where} for {svc}"]
    if not changed:
        lines[0] += " (unchanged, file not rewritten)"
    lines += _notes(result, svc, now)
    apps, app_users = store.count_app_passwords()
    if apps:
        lines.append(
            f"note: {apps} app password(s) of {app_users} user(s) not exported: a passwd-file "
            "cannot limit them to their own networks and services; they work through "
            "saslnetauth serve (auth socket, Lua bridge) and saslnetauth-checkpassword only"
        )
    for line in lines:
        click.echo(line, err=to_stdout)


def _write(file: str, text: str) -> bool:
    """Write ``text`` to ``file`` (atomically) or to standard output (``-``); False when
    the file already held it and was not rewritten."""
    from saslnetauth.admin.atomicfile import write_atomic

    if file == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    try:
        written = write_atomic(file, text.encode("utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot write {file}: {exc.strerror or exc}") from None
    for warning in written.warnings:
        click.echo(f"saslnetauth: warning: {warning}", err=True)
    return written.changed


def _notes(result: ExportResult, svc: str, now: float) -> list[str]:
    """The summary's notes on what the file leaves out and how long it stays true."""
    from saslnetauth.admin.exporters import NO_NETWORK
    from saslnetauth.policy.rules.expiry import describe_expiry

    notes = []
    if result.skipped:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
        notes.append(f"note: skipped: {skipped}")
    if result.no_network:
        notes.append(
            f"note: {result.no_network} user(s) have no network for {svc}: written with "
            f"allow_nets={NO_NETWORK} (no login possible)"
        )
    if result.rules_left_out:
        notes.append(
            f"note: {result.rules_left_out} network rule(s) left out: "
            f"they are not valid for all of {svc}"
        )
    if result.terms_left_out:
        notes.append(
            f"note: {result.terms_left_out} country/ASN term(s) left out: Dovecot's allow_nets "
            "cannot express them (logins they would admit fail; the Lua bridge or the policy "
            "endpoint asks saslnetauth instead)"
        )
    if result.expired_left_out:
        notes.append(f"note: {result.expired_left_out} expired network grant(s) left out")
    if result.next_expiry is not None:
        notes.append(
            f"note: the next network grant in this file "
            f"{describe_expiry(result.next_expiry, now)}; it stays valid in the file until "
            "the next export: run the export again before then"
        )
    return notes
