"""What the commands import at start-up (issue 26): only what the command needs.

Each test runs the real console script with ``PYTHONPROFILEIMPORTTIME=1``
(``python -X importtime``) and reads the imported modules from its stderr,
so a module-level import that drags SQLAlchemy, passlib, rich... back into
``saslnetauth --help`` fails here. No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from saslnetauth.cli import COMMANDS, cli
from tests.support.clitools import BIN, init_with_user, run
from tests.support.importtime import FAST_PATH_MODULES, PROFILE, imported, not_stdlib

#: Never needed to parse the command line or print help.
HEAVY = {
    "sqlalchemy",
    "alembic",
    "passlib",
    "argon2",
    "bcrypt",
    "rich",
    "prometheus_client",
    "h11",
    "maxminddb",
    "pam",
    "psycopg",
    "pymysql",
    "asyncio",
    "saslnetauth.store",
    "saslnetauth.policy.engine",
    "saslnetauth.credentials.passwords",
    "saslnetauth.config",
}
#: Never needed by commands that only read the database and print plain text.
NOT_FOR_READING = {
    "alembic",
    "passlib",
    "rich",
    "prometheus_client",
    "h11",
    "maxminddb",
    "saslnetauth.policy.engine",
    "saslnetauth.events.commands",
    "saslnetauth.store.migrate",
}


def top_level(names: set[str]) -> set[str]:
    return names | {n.split(".")[0] for n in names}


def loaded(stderr: str, watched: set[str]) -> set[str]:
    return top_level(imported(stderr)) & watched


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["user", "--help"], ["user", "show", "--help"], ["check", "-h"]],
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    r = run(*args, env=PROFILE, process=True)
    assert r.code == 0, r.err
    names = imported(r.err)
    assert "click" in names  # the profile really was read
    assert loaded(r.err, HEAVY) == set()


def test_help_imports_no_command_module() -> None:
    r = run("--help", env=PROFILE, process=True)
    assert r.code == 0
    commands = {target.partition(":")[0] for target, _ in COMMANDS.values()}
    assert imported(r.err) & commands == set()
    for name in COMMANDS:
        assert f"\n  {name} " in r.out


def test_user_show_reads_without_engine_hasher_or_rich(sqlite_url: str) -> None:
    db = init_with_user(sqlite_url, "alice", "s3cret", "192.0.2.0/24")
    r = run("user", "show", "alice", db=db, env=PROFILE, process=True)
    assert r.code == 0, r.err
    assert "192.0.2.0/24" in r.out
    assert "sqlalchemy" in imported(r.err)
    assert loaded(r.err, NOT_FOR_READING) == set()


def test_check_does_not_import_migrations_rich_or_the_server(sqlite_url: str) -> None:
    db = init_with_user(sqlite_url, "alice", "s3cret", "192.0.2.0/24")
    r = run("check", "alice", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="s3cret\n")
    assert r.code == 0, r.out + r.err
    r = run(
        "check", "alice", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="s3cret\n",
        env=PROFILE, process=True,
    )  # fmt: skip
    assert r.code == 0, r.out + r.err
    assert "saslnetauth.policy.engine" in imported(r.err)
    watched = {"alembic", "rich", "prometheus_client", "h11", "saslnetauth.serve"}
    assert loaded(r.err, watched) == set()


def test_command_table_summaries_are_the_commands_own() -> None:
    """``--help`` lists each command by the table's summary without importing it:
    the summary must shorten exactly like the command's own help, at any width."""
    ctx = click.Context(cli, info_name="saslnetauth")
    for name, (target, summary) in COMMANDS.items():
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, target
        assert cmd.name == name
        assert cmd.short_help is None and not cmd.hidden and not cmd.deprecated, name
        stand_in = click.Command(name, help=summary)
        for limit in range(10, 130, 3):
            assert stand_in.get_short_help_str(limit) == cmd.get_short_help_str(limit), name
    assert sorted(cli.commands) == sorted(COMMANDS)


def test_lazy_listing_equals_the_loaded_listing() -> None:
    """In a fresh process: the top-level help before any command module is imported
    is byte-identical to the help once every command is loaded, at several widths."""
    script = (
        "import click\n"
        "from saslnetauth.cli import cli\n"
        "def page(width):\n"
        "    ctx = click.Context(cli, info_name='saslnetauth', terminal_width=width)\n"
        "    return cli.get_help(ctx)\n"
        "widths = (40, 78, 100, 200)\n"
        "lazy = [page(w) for w in widths]\n"
        "assert not cli.commands, sorted(cli.commands)\n"
        "ctx = click.Context(cli, info_name='saslnetauth')\n"
        "for name in cli.list_commands(ctx):\n"
        "    cli.get_command(ctx, name)\n"
        "assert sorted(cli.commands) == cli.list_commands(ctx)\n"
        "assert lazy == [page(w) for w in widths]\n"
        "print('same')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "same"


def test_checkpassword_fast_path_imports_only_the_standard_library(tmp_path: Path) -> None:
    """The fast path up to the server's answer: options, fd 3, environment, the
    client's connect (nothing listens: --fallback tempfail exits 111). With a real
    server, to the reply program: tests/peers/test_checkpassword.py."""
    r, w = os.pipe()
    os.write(w, b"alice\0s3cret\0\0")
    os.close(w)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    env.update(PROFILE, SERVICE="imap", TCPREMOTEIP="192.0.2.9", TCPLOCALIP="127.0.0.1")
    program = str(BIN / "saslnetauth-checkpassword")
    args = ["--socket", f"unix:{tmp_path}/nothing-listens.sock", "--fallback", "tempfail"]
    try:  # the shell puts the pipe on fd 3, where Dovecot puts its input
        p = subprocess.run(
            ["/bin/bash", "-c", f'exec "$@" 3<&{r}', "bash", program, *args, "/bin/true"],
            pass_fds=(r,), env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(r)
    assert p.returncode == 111, p.stderr
    assert "auth server unavailable" in p.stderr
    names = imported(p.stderr)
    ours = {n for n in names if n.split(".")[0] == "saslnetauth"}
    assert "saslnetauth.dovecot.client" in ours
    assert ours <= FAST_PATH_MODULES
    assert not_stdlib(names) - ours == set()
    # nor the heavier standard modules the client used to pull in
    assert {"socket", "base64", "dataclasses", "secrets", "saslnetauth.errors"} & names == set()
