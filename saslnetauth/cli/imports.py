"""``saslnetauth import ...``: users in, in bulk (the export is :mod:`saslnetauth.cli.exports`).

Formats: :mod:`saslnetauth.admin.passwdfile` (Dovecot passwd-file) and
:mod:`saslnetauth.admin.csvimport` (CSV).
An import is all or nothing: every line is checked first, every problem is
reported as ``FILE:LINE: problem``, and only a file without problems is
written, in one transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from saslnetauth.admin.csvimport import parse_csv
from saslnetauth.admin.importers import LineError, ParseResult
from saslnetauth.admin.importplan import Plan, hash_pending, matching_plaintext, plan_import
from saslnetauth.admin.passwdfile import PASSWD_FILE_DEFAULT_SCHEME, parse_passwd_file
from saslnetauth.cli.common import EXIT_ERROR, AppContext, emit_json, pass_app
from saslnetauth.errors import InvalidInputError
from saslnetauth.runtime import make_hasher

#: Files with at least this many lines get a progress bar (on a terminal).
PROGRESS_MIN_LINES = 1000

Parser = Callable[..., ParseResult]


class _Progress:
    """A rich progress bar on standard error, or nothing when not on a terminal."""

    def __init__(self, show: bool) -> None:
        self._bar: Any = None
        if show:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        bar = self._bar
        if bar is None or total <= 0:
            return None
        task_id = bar.add_task(description, total=total)
        return lambda done: bar.update(task_id, completed=done)


def _read(file: str) -> str:
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {file}: {exc.strerror or exc}") from None
    return data.decode("utf-8", "surrogateescape")


@click.group("import")
def import_group() -> None:
    """Add or update users from a Dovecot passwd-file or a CSV file.

    All or nothing: every line is checked first and every problem is listed
    as FILE:LINE: problem; only a file without problems is written, in one
    transaction. Users in the file are added, or updated to exactly the
    file's password, networks and state; users not in the file are left
    alone. Running the same import again changes nothing. Exit status: 0
    done, 1 problems in the file (nothing written), 75 database unavailable.
    """


_DRY_RUN = click.option(
    "--dry-run", is_flag=True, help="Check the file and report what would change; write nothing."
)
_JSON = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the summary as JSON: added, updated, unchanged, errors [{line, error}], ...",
)


@import_group.command("passwd-file")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--scheme",
    default=PASSWD_FILE_DEFAULT_SCHEME,
    show_default=True,
    metavar="SCHEME",
    help="Scheme of password values written without {SCHEME} prefix (Dovecot's scheme=).",
)
@_DRY_RUN
@_JSON
@pass_app
def import_passwd_file(
    app: AppContext, file: str, scheme: str, dry_run: bool, as_json: bool
) -> None:
    """Import users from a Dovecot passwd-file (FILE, or - for standard input).

    \b
    Line format (Dovecot passwd-file; only the first two fields matter):
      user:{SCHEME}hash:uid:gid:gecos:home:shell:extra fields
      alice:{SHA512-CRYPT}$6$...::::::allow_nets=192.0.2.0/24,2001:db8::/32,local
    Blank lines and lines starting with # are skipped.

    \b
    allow_nets=NET,...   the user's networks (all services)
    nopassword           Dovecot accepts ANY password; here the user gets
                         NO password (every login fails until one is set)
    empty password       user without a password (every login fails)
    fail, nologin        the user is imported disabled
    anything else        ignored and counted (userdb_*, quota_rule, ...)

    A hash saslnetauth cannot verify, a bad network (e.g. host bits set) or
    a user named twice is an error.
    """

    def parse(text: str, hasher: Any, **kw: Any) -> ParseResult:
        return parse_passwd_file(text, hasher, default_scheme=scheme.upper(), **kw)

    _import(app, "passwd-file", file, parse, dry_run, as_json)


@import_group.command("csv")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@_DRY_RUN
@_JSON
@pass_app
def import_csv(app: AppContext, file: str, dry_run: bool, as_json: bool) -> None:
    """Import users from a CSV file (FILE, or - for standard input).

    \b
    UTF-8, comma separated; fields containing commas (ARGON2 hashes do)
    go in "double quotes". The first row names the columns, in any order:
      name           user name (required)
      password_hash  a hash as --hash takes it, e.g. {ARGON2ID}$argon2id$...
      password       OR plain text, hashed with the default scheme (warned)
      networks       networks separated by spaces; limit one to services
                     with @svc+svc: 192.0.2.0/24 2001:db8::/32@imap+pop3 local
      enabled        yes/no (true/false, 1/0); empty means yes
    An empty password cell means no password (every login fails).

    \b
    Example:
      name,password_hash,networks,enabled
      alice,{SHA512-CRYPT}$6$...,192.0.2.0/24 203.0.113.0/24@smtp+submission,yes
      bob,"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...",local,no
    """
    _import(app, "csv", file, parse_csv, dry_run, as_json)


def _import(
    app: AppContext, fmt: str, file: str, parse: Parser, dry_run: bool, as_json: bool
) -> None:
    text = _read(file)
    label = "standard input" if file == "-" else file
    cfg = app.config
    hasher = make_hasher(cfg)
    lines = text.count("\n") + 1
    show = not as_json and lines >= PROGRESS_MIN_LINES and sys.stdout.isatty()
    with _Progress(show and sys.stderr.isatty()) as ui:
        result = parse(
            text, hasher, lowercase=cfg.lowercase_usernames, progress=ui.task("reading", lines)
        )
        if result.plaintext_column:
            _warn(f"{label} contains plain-text passwords (column 'password'); keep it safe")
        store = app.store()
        from saslnetauth.store.bulk import apply_changes, load_users

        existing = load_users(store)
        to_verify = sum(
            1 for r in result.records if r.password_plain is not None and r.name in existing
        )
        matches = matching_plaintext(
            result.records, existing, hasher, progress=ui.task("checking passwords", to_verify)
        )
        plan = plan_import(result.records, existing, plaintext_matches=matches)
        errors = sorted([*result.errors, *plan.errors], key=lambda e: e.line)
        written = not errors and not dry_run
        if written:
            changes = plan.changes
            if changes.pending_plain:
                changes = hash_pending(
                    changes,
                    hasher,
                    progress=ui.task("hashing passwords", len(changes.pending_plain)),
                )
            apply_changes(store, changes, progress=ui.task("writing", changes.rows))
    _report(fmt, label, result, plan, errors, dry_run, written, as_json)


def _report(
    fmt: str,
    label: str,
    result: ParseResult,
    plan: Plan,
    errors: list[LineError],
    dry_run: bool,
    written: bool,
    as_json: bool,
) -> None:
    if as_json:
        emit_json(
            {
                "format": fmt,
                "file": label,
                "dry_run": dry_run,
                "written": written,
                "added": plan.added,
                "updated": plan.updated,
                "unchanged": plan.unchanged,
                "errors": [{"line": e.line, "error": e.message} for e in errors],
                "no_password": result.no_password,
                "disabled_by_field": result.disabled_by_field,
                "plaintext_hashes": result.plaintext_hashes,
                "ignored_fields": dict(sorted(result.ignored_fields.items())),
            }
        )
        if errors:
            raise click.exceptions.Exit(EXIT_ERROR)
        return
    counts = (
        f"{plan.added} added, {plan.updated} updated, {plan.unchanged} unchanged, "
        f"{len(errors)} errors"
    )
    if errors:
        for err in errors:
            click.echo(f"{label}:{err.line}: {err.message}", err=True)
        raise InvalidInputError(
            f"{len(errors)} error(s) in {label}; nothing written "
            f"(without them: {counts.rsplit(', ', 1)[0]})"
        )
    if dry_run:
        click.echo(f"dry run of {label}, nothing written: would be {counts}")
    else:
        click.echo(f"imported {label}: {counts}")
    _notes(result)


def _notes(result: ParseResult) -> None:
    if result.no_password:
        click.echo(
            f"note: {result.no_password} user(s) without a password (empty password or "
            "nopassword): every login of theirs fails until `saslnetauth user passwd` sets one"
        )
    if result.disabled_by_field:
        click.echo(f"note: {result.disabled_by_field} user(s) disabled by a fail/nologin field")
    if result.ignored_fields:
        fields = ", ".join(f"{k} ({n})" for k, n in sorted(result.ignored_fields.items()))
        click.echo(f"note: ignored extra fields: {fields}")
    if result.plaintext_hashes:
        _warn(
            f"{result.plaintext_hashes} password(s) stored as plain text ({{PLAIN}}); prefer hashes"
        )


def _warn(text: str) -> None:
    click.echo(f"saslnetauth: warning: {text}", err=True)
