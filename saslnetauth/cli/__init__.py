"""The ``saslnetauth`` command: admin CLI and server entry point.

Exit status of every command: 0 success; 1 error in the request (unknown
user, duplicate, bad network or hash...); 2 usage error; 75 temporary
failure (database unreachable or not initialised). ``check`` exits 0 when
the login would be accepted, 1 when rejected, 75 on temporary failure.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from saslnetauth import __version__
from saslnetauth.cli.common import EXIT_ERROR, EXIT_TEMPFAIL, AppContext
from saslnetauth.cli.lazy import LazyGroup
from saslnetauth.errors import BackendError, SaslNetAuthError
from saslnetauth.logfmt import mask_url

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: name -> ("module:command", the first paragraph of its help, which ``--help`` lists).
#: A command's module is imported only when that command runs or shows its help:
#: ``saslnetauth --help`` imports none (tests/cli/test_cli_imports.py).
COMMANDS = {
    "init": (
        "saslnetauth.cli.db:init",
        "Create the database, or upgrade it to the current schema.",
    ),
    "db": (
        "saslnetauth.cli.db:db",
        "Inspect and migrate the database schema (Alembic); purge expired grants.",
    ),
    "user": ("saslnetauth.cli.users:user", "Add, change, list and remove users."),
    "net": (
        "saslnetauth.cli.nets:net",
        "Manage global networks (they admit every user, per service).",
    ),
    "check": (
        "saslnetauth.cli.check:check",
        "Would user NAME with this password be accepted from --rip for --service?",
    ),
    "serve": (
        "saslnetauth.cli.serve:serve",
        "Answer SASL logins for Postfix and Exim over Dovecot's auth protocol.",
    ),
    "report": ("saslnetauth.cli.report:report", "Summarise the server's recent verdicts."),
    "geoip": (
        "saslnetauth.cli.geoip:geoip",
        "Look addresses up in the GeoIP databases ([geoip] country_db, asn_db).",
    ),
    "sending": ("saslnetauth.cli.sending:sending", "Sending limits after AUTH (docs/sending.md)."),
    "import": (
        "saslnetauth.cli.imports:import_group",
        "Add or update users from a Dovecot passwd-file or a CSV file.",
    ),
    "export": (
        "saslnetauth.cli.exports:export_group",
        "Write users out for other software (Dovecot 2.4 passwd-file).",
    ),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--database",
    "database",
    metavar="URL",
    envvar="SASLNETAUTH_DATABASE_URL",
    show_envvar=True,
    help="SQLAlchemy database URL, e.g. sqlite:////var/lib/saslnetauth/saslnetauth.db, "
    "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db. "
    "Overrides database_url of the configuration file.",
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="SASLNETAUTH_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="TOML configuration file. Default: /etc/saslnetauth/saslnetauth.toml if it "
    "exists (never the current directory). Refused when writable by group or others.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="saslnetauth")
@click.pass_context
def cli(ctx: click.Context, database: str | None, config_path: str | None, debug: bool) -> None:
    """saslnetauth: SASL logins that only work from the user's own networks.

    Credentials are checked first; then the client address must lie in the
    user's networks or in a global network that applies to the service.
    Otherwise the login fails exactly like a wrong password.

    \b
    Quick start:
      saslnetauth init
      echo 's3cret' | saslnetauth user add alice --password-stdin --net 192.0.2.0/24
      echo 's3cret' | saslnetauth check alice --rip 192.0.2.9 --password-stdin

    Exit status: 0 success, 1 error or rejected, 2 usage error, 75 temporary
    failure (database unreachable or not initialised).
    """
    ctx.obj = AppContext(database=database, config_path=config_path, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one clear line per error, never a traceback."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="saslnetauth", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("saslnetauth: aborted", err=True)
        return EXIT_ERROR
    except BackendError as exc:
        _error(exc, debug)
        return EXIT_TEMPFAIL
    except SaslNetAuthError as exc:
        _error(exc, debug)
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("saslnetauth: interrupted", err=True)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(
            f"saslnetauth: internal error: {type(exc).__name__}: {mask_url(str(exc))}", err=True
        )
        return 70
    # click returns the code of a click.exceptions.Exit raised by a command
    return rv if isinstance(rv, int) else 0


def _error(exc: Any, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"saslnetauth: error: {mask_url(str(exc))}", err=True)
