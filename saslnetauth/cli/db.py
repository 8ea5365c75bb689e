"""``saslnetauth init`` and ``saslnetauth db ...``: schema management."""

from __future__ import annotations

import click

from saslnetauth.cli.common import AppContext, pass_app
from saslnetauth.store.schema import SCHEMA_REVISION


@click.command()
@pass_app
def init(app: AppContext) -> None:
    """Create the database, or upgrade it to the current schema.

    Safe to run again: an up-to-date database is left as it is. For SQLite
    the file (mode 0600: it holds the password hashes) and its directory are
    created when missing, and an existing file others could read is made
    private (owner read/write, group at most read).
    """
    from saslnetauth.runtime import secure_sqlite_file
    from saslnetauth.store import sqlite_path

    path = sqlite_path(app.config.database_url)
    notes = secure_sqlite_file(path) if path is not None else []
    _upgrade(app)
    for note in notes:
        click.echo(note)


@click.group()
def db() -> None:
    """Inspect and migrate the database schema (Alembic); purge expired grants."""


@db.command("upgrade")
@pass_app
def upgrade(app: AppContext) -> None:
    """Upgrade the database schema to the version this saslnetauth needs."""
    _upgrade(app)


@db.command("current")
@pass_app
def current(app: AppContext) -> None:
    """Show the schema revision of the database and the one this code needs.

    Exits 0 when they match, 75 when the database must be upgraded.
    """
    store = app.store(check_schema=False)
    rev = store.schema_revision()
    click.echo(f"database: {store.describe()}")
    click.echo(f"revision: {rev or 'none (run: saslnetauth init)'}")
    click.echo(f"required: {SCHEMA_REVISION}")
    if rev != SCHEMA_REVISION:
        raise click.exceptions.Exit(75)


@db.command("purge-expired")
@click.option(
    "--keep-days",
    type=click.IntRange(min=0),
    metavar="DAYS",
    help="Delete grants expired more than DAYS ago (default: [serve] expired_keep_days).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@pass_app
def purge_expired(app: AppContext, keep_days: int | None, dry_run: bool) -> None:
    """Delete expired network grants (user and global) after their grace period.

    `saslnetauth serve` does this every hour by itself; this is for setups
    without it (e.g. the passwd-file export) or to clean up now. Expired
    grants never match, whether deleted or not.
    """
    import time

    from saslnetauth.store.purge import purge_expired as purge

    days = app.config.serve.expired_keep_days if keep_days is None else keep_days
    purged = purge(app.store(), days, time.time(), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {purged.count} grant(s) expired more than {days} day(s) ago")
    for row in purged.user_rows + purged.global_rows:
        click.echo(f"  {row}")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm: downgrading can drop tables and data.")
@pass_app
def downgrade(app: AppContext, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION ("base" removes every table)."""
    from saslnetauth.store import migrate

    if not yes:
        raise click.UsageError("downgrading may destroy data; add --yes to confirm")
    store = app.store(check_schema=False)
    migrate.downgrade(store, revision)
    click.echo(f"database {store.describe()} downgraded to {revision}")


def _upgrade(app: AppContext) -> None:
    from saslnetauth.store import migrate

    store = app.store(check_schema=False, create=True)
    before = store.schema_revision()
    migrate.upgrade(store)
    after = store.schema_revision()
    if before == after:
        click.echo(f"database {store.describe()} is up to date (revision {after})")
    else:
        click.echo(f"database {store.describe()} upgraded from {before or 'empty'} to {after}")
