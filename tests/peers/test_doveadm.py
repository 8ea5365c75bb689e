"""Dovecot's own client (`doveadm auth test -a`) against saslnetauth's socket."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.peers import require_binary
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer
PW = "d0veadm pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("doveadm")
    db = init_with_user(f"sqlite:///{tmp}/d.db", "alice", PW, "127.0.0.2", "2001:db8::/32")
    assert run("user", "net", "add", "alice", "any", "--service", "imap", db=db).code == 0
    assert (
        run(
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--disabled",
            "--net",
            "any",
            db=db,
            stdin=PW + "\n",
        ).code
        == 0
    )
    cfg = Path(tmp) / "c.toml"
    cfg.write_text("[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n")
    with run_server(db, config=cfg) as srv:
        yield srv


def auth_test(server: ServerProcess, user: str, pw: str, **extra: str) -> tuple[bool, str]:
    doveadm = require_binary("doveadm")
    cmd = [doveadm, "auth", "test", "-a", str(server.unix)]
    for k, v in extra.items():
        cmd += ["-x", f"{k}={v}"]
    cmd += [user, pw]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert ("auth succeeded" in out) != ("auth failed" in out), out
    return "auth succeeded" in out, out


@pytest.mark.parametrize(
    ("user", "pw", "rip", "service", "ok"),
    [
        ("alice", PW, "127.0.0.2", "smtp", True),
        ("alice", PW, "127.0.0.3", "smtp", False),
        ("alice", PW, "::ffff:127.0.0.2", "smtp", True),
        ("alice", PW, "::ffff:127.0.0.3", "smtp", False),
        ("alice", PW, "2001:db8::25", "smtp", True),
        ("alice", PW, "2001:db9::25", "smtp", False),
        ("alice", PW, "198.51.100.7", "imap", True),
        ("alice", "wrong", "127.0.0.2", "smtp", False),
        ("bob", PW, "127.0.0.2", "smtp", False),
        ("nobody", PW, "127.0.0.2", "smtp", False),
    ],
)
def test_doveadm_auth_test(
    server: ServerProcess, user: str, pw: str, rip: str, service: str, ok: bool
) -> None:
    got, out = auth_test(server, user, pw, rip=rip, service=service)
    assert got is ok, out
    if ok:
        assert f"user={user}" in out


def test_doveadm_without_rip_matches_only_local(server: ServerProcess) -> None:
    got, out = auth_test(server, "alice", PW, service="smtp")
    assert got is False, out
