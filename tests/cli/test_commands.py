"""The admin CLI, end to end through the real console script, on every database."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from saslnetauth.store.schema import SCHEMA_REVISION
from tests.support.clitools import run


@pytest.fixture
def db(db_url: str) -> str:
    r = run("init", db=db_url)
    assert r.code == 0, r.err
    return db_url


def test_acceptance_walkthrough(db: str) -> None:
    assert run("init", db=db).code == 0  # idempotent
    r = run(
        "user", "add", "alice", "--password-stdin", "--net", "192.0.2.0/24", db=db, stdin="s3cret\n"
    )
    assert r.code == 0, r.err
    for rip, code in [
        ("192.0.2.9", 0),
        ("198.51.100.1", 1),
        ("::ffff:198.51.100.1", 1),
        ("::ffff:192.0.2.9", 0),
    ]:
        r = run(
            "check",
            "alice",
            "--rip",
            rip,
            "--service",
            "smtp",
            "--password-stdin",
            db=db,
            stdin="s3cret\n",
        )
        assert r.code == code, (rip, r.out, r.err)
    r = run("check", "alice", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="wrong\n")
    assert r.code == 1 and "bad_password" in r.out
    r = run("check", "nobody", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="s3cret\n")
    assert r.code == 1 and "unknown_user" in r.out
    r = run("check", "alice", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="s3cret\n")
    assert "ACCEPTED" in r.out and "user network 192.0.2.0/24" in r.out


def test_service_scoping_and_globals(db: str) -> None:
    run("user", "add", "alice", "--password-stdin", "--net", "192.0.2.0/24", db=db, stdin="pw\n")
    r = run(
        "user", "net", "add", "alice", "any", "--service", "imap", "--comment", "roaming", db=db
    )
    assert r.code == 0, r.err

    def check(rip: str, svc: str, user: str = "alice") -> int:
        return run(
            "check", user, "--rip", rip, "--service", svc, "--password-stdin", db=db, stdin="pw\n"
        ).code

    assert check("203.0.113.7", "imap") == 0
    assert check("203.0.113.7", "smtp") == 1
    assert check("192.0.2.7", "smtp") == 0
    run("user", "add", "bob", "--password-stdin", db=db, stdin="pw\n")
    r = run("check", "bob", "--rip", "203.0.113.7", "--password-stdin", db=db, stdin="pw\n")
    assert r.code == 1 and "no_network_rules" in r.out
    assert (
        run("net", "add", "203.0.113.0/24", "--service", "smtp", "--comment", "office", db=db).code
        == 0
    )
    assert check("203.0.113.7", "smtp", "bob") == 0
    assert check("203.0.113.7", "imap", "bob") == 1
    nets = json.loads(run("net", "list", "--json", db=db).out)
    assert nets == [
        {
            "network": "203.0.113.0/24",
            "services": ["smtp"],
            "comment": "office",
            "created_at": nets[0]["created_at"],
            "expires_at": None,
            "expired": False,
            "valid": True,
            "error": None,
        }
    ]
    assert run("net", "del", "203.0.113.0/24", db=db).code == 0
    assert check("203.0.113.7", "smtp", "bob") == 1
    assert run("user", "net", "del", "alice", "any", db=db).code == 0
    assert check("203.0.113.7", "imap") == 1


def test_user_lifecycle_and_json(db: str) -> None:
    assert (
        run(
            "user",
            "add",
            "carol",
            "--password-stdin",
            "--net",
            "10.0.0.0/8",
            "--net",
            "2001:db8::/32",
            "--disabled",
            db=db,
            stdin="pw\n",
        ).code
        == 0
    )
    shown = json.loads(run("user", "show", "carol", "--json", db=db).out)
    assert shown["name"] == "carol" and shown["enabled"] is False and shown["scheme"] == "ARGON2ID"
    assert [n["network"] for n in shown["networks"]] == ["10.0.0.0/8", "2001:db8::/32"]
    assert set(shown) == {
        "name",
        "enabled",
        "backend",
        "has_password",
        "scheme",
        "networks",
        "main_password_services",  # null: [passwords] main_password_services
        "suspended",  # docs/sending.md
        "created_at",
        "updated_at",
        "retired_passwords",  # user show only (user list --json leaves it out)
    }
    assert shown["main_password_services"] is None
    assert shown["retired_passwords"] == []
    assert (
        run("check", "carol", "--rip", "10.1.1.1", "--password-stdin", db=db, stdin="pw\n").code
        == 1
    )
    assert run("user", "enable", "carol", db=db).code == 0
    assert (
        run("check", "carol", "--rip", "10.1.1.1", "--password-stdin", db=db, stdin="pw\n").code
        == 0
    )
    assert run("user", "passwd", "carol", "--password-stdin", db=db, stdin="new\n").code == 0
    assert (
        run("check", "carol", "--rip", "10.1.1.1", "--password-stdin", db=db, stdin="pw\n").code
        == 1
    )
    assert (
        run("check", "carol", "--rip", "10.1.1.1", "--password-stdin", db=db, stdin="new\n").code
        == 0
    )
    assert run("user", "disable", "carol", db=db).code == 0
    assert (
        run("check", "carol", "--rip", "10.1.1.1", "--password-stdin", db=db, stdin="new\n").code
        == 1
    )
    listed = json.loads(run("user", "list", "--json", db=db).out)
    assert [u["name"] for u in listed] == ["carol"]
    assert "carol" in run("user", "list", db=db).out
    assert run("user", "del", "carol", db=db).code == 0
    assert json.loads(run("user", "list", "--json", db=db).out) == []


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("user", "add", "x", "--password-stdin", "--net", "10.1.2.3/8"),
            "pw\n",
            "did you mean 10.0.0.0/8",
        ),
        (("user", "add", "x", "--hash", "{FOO}bar"), None, "unknown password scheme"),
        (("user", "add", "x", "--hash", "not-a-hash"), None, "unrecognised password hash"),
        (("user", "add", "x"), None, "no password given"),
        (("user", "add", "x", "--password-stdin"), "", "empty password"),
        (("user", "add", "bad\tname", "--password-stdin"), "pw\n", "control characters"),
        (("user", "del", "ghost"), None, "no such user: ghost"),
        (("user", "show", "ghost"), None, "no such user: ghost"),
        (("user", "net", "add", "ghost", "10.0.0.0/8"), None, "no such user: ghost"),
        (("user", "net", "add", "x", "10.0.0.0/8", "--service", "sm tp;"), None, "invalid service"),
        (("net", "add", "bogus"), None, "invalid network"),
        (("net", "del", "10.0.0.0/8"), None, "no global network"),
    ],
)
def test_errors_are_one_clear_line(
    db: str, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    r = run(*args, db=db, stdin=stdin)
    assert r.code == 1, (r.code, r.out, r.err)
    assert message in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_duplicate_user(db: str) -> None:
    run("user", "add", "dup", "--password-stdin", db=db, stdin="pw\n")
    r = run("user", "add", "DUP", "--password-stdin", db=db, stdin="pw\n")
    assert r.code == 1 and r.err.strip() == "saslnetauth: error: user dup already exists"


def test_doveadm_hash_logs_in(db: str) -> None:
    doveadm = shutil.which("doveadm")
    if doveadm is None:
        from tests.support.peers import missing

        missing("doveadm (dovecot-core)")
    assert doveadm is not None
    h = subprocess.run(
        [doveadm, "pw", "-s", "SHA512-CRYPT", "-p", "d0ve pw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert h.startswith("{SHA512-CRYPT}$6$")
    assert run("user", "add", "frank", "--hash", h, "--net", "any", db=db).code == 0
    assert (
        run("check", "frank", "--rip", "1.2.3.4", "--password-stdin", db=db, stdin="d0ve pw\n").code
        == 0
    )
    assert (
        run("check", "frank", "--rip", "1.2.3.4", "--password-stdin", db=db, stdin="d0ve pX\n").code
        == 1
    )


def test_plaintext_hash_warns(db: str) -> None:
    r = run("user", "add", "gus", "--hash", "{PLAIN}clear", "--net", "any", db=db)
    assert r.code == 0 and "plaintext" in r.err
    assert (
        run("check", "gus", "--rip", "1.2.3.4", "--password-stdin", db=db, stdin="clear\n").code
        == 0
    )


def test_unreachable_database_is_tempfail() -> None:
    db = "postgresql+psycopg://nobody@127.0.0.1:9/none"
    r = run("user", "list", db=db)
    assert r.code == 75 and "database error" in r.err and "Traceback" not in r.err
    r = run("check", "alice", "--rip", "1.2.3.4", "--password-stdin", db=db, stdin="pw\n")
    assert r.code == 75


def test_uninitialised_database(tmp_path: Path) -> None:
    missing_file = f"sqlite:///{tmp_path}/missing.db"
    r = run("user", "list", db=missing_file)
    assert r.code == 75 and "saslnetauth init" in r.err
    assert not (tmp_path / "missing.db").exists()
    r = run("db", "current", db=missing_file)
    assert r.code == 75


def test_db_current_and_env_and_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    assert run("init", env={"SASLNETAUTH_DATABASE_URL": url}).code == 0
    r = run("db", "current", env={"SASLNETAUTH_DATABASE_URL": url})
    assert r.code == 0 and f"revision: {SCHEMA_REVISION}" in r.out
    cfg = tmp_path / "conf.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/conf.db"\n')
    assert run("--config", str(cfg), "init").code == 0
    assert (tmp_path / "conf.db").exists()
    # the command line beats the environment, which beats the file
    r = run("--config", str(cfg), "db", "current", env={"SASLNETAUTH_DATABASE_URL": url})
    assert "env.db" in r.out
    bad = tmp_path / "bad.toml"
    bad.write_text("databse_url = 'x'\n")
    r = run("--config", str(bad), "user", "list")
    assert r.code == 1 and "unknown key 'databse_url'" in r.err
    r = run("--config", str(tmp_path / "nope.toml"), "user", "list")
    assert r.code == 1 and "does not exist" in r.err


def test_help_texts() -> None:
    r = run("--help")
    assert r.code == 0 and "check" in r.out and "user" in r.out
    for cmd in (
        ["user", "add"],
        ["user", "net", "add"],
        ["net", "add"],
        ["check"],
        ["db", "current"],
    ):
        r = run(*cmd, "--help")
        assert r.code == 0 and "Usage:" in r.out, cmd


@pytest.mark.parametrize("stored", ["{PLAIN}", "{CLEARTEXT}", "{plain}"])
def test_empty_plaintext_hash_refused(sqlite_url: str, stored: str) -> None:
    """Issue 11 item 4: an empty plain-text hash would let an empty password in."""
    assert run("init", db=sqlite_url).code == 0
    r = run("user", "add", "gus", "--hash", stored, "--net", "any", db=sqlite_url)
    assert r.code == 1 and "empty" in r.err, r.err
    assert run("user", "show", "gus", db=sqlite_url).code == 1  # nothing was stored
    r = run("user", "add", "gus", "--hash", "{PLAIN}x", "--net", "any", db=sqlite_url)
    assert r.code == 0, r.err
    r = run("user", "passwd", "gus", "--hash", stored, db=sqlite_url)
    assert r.code == 1 and "empty" in r.err, r.err
    shown = json.loads(run("user", "show", "gus", "--json", db=sqlite_url).out)
    assert shown["scheme"] == "PLAIN" and shown["has_password"] is True
    r = run("check", "gus", "--rip", "1.2.3.4", "--password-stdin", db=sqlite_url, stdin="\n")
    assert r.code != 0 and "ACCEPTED" not in r.out
