"""A real Postfix behind the connection rules of issue 11 (items 10 and 11).

Postfix's smtpd (user postfix) must still log in while many connections of its own
user are open (issue 21, item 6), and after saslnetauth closed its idle connection
(Postfix finds the UNIX socket closed on its next write and reconnects:
``xsasl_dovecot_server_first`` in Postfix's src/xsasl/xsasl_dovecot_server.c).
"""

from __future__ import annotations

import base64
import pwd
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, PostfixInstance, peer_tmpdir, require_source_addresses
from tests.support.clitools import run
from tests.support.serverproc import ServerProcess, as_user, results, run_server

pytestmark = pytest.mark.peer

PW = "P0stfix-acc3ss"


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    require_source_addresses(ALLOWED_IP)
    with peer_tmpdir("sna-pfa-") as d:
        yield d


@pytest.fixture(scope="module")
def server(peer_dir: Path) -> Iterator[ServerProcess]:
    db = f"sqlite:///{peer_dir}/pfa.db"
    assert run("init", db=db).code == 0
    r = run("user", "add", "alice", "--password-stdin", "--net", ALLOWED_IP, db=db, stdin=PW)
    assert r.code == 0, r.err
    cfg = peer_dir / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
        'allowed_users = ["root", "postfix"]\n'
        "max_connections = 4\nhandshake_timeout = 3.0\nidle_timeout = 1.0\n"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg, workdir=peer_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, server: ServerProcess) -> Iterator[PostfixInstance]:
    with PostfixInstance(peer_dir / "postfix", server.unix) as pf:
        yield pf


def test_many_connections_of_the_postfix_user_do_not_lock_postfix_out(
    postfix: PostfixInstance, server: ServerProcess
) -> None:
    """Issue 21, item 6: every smtpd is the same peer (user postfix), so the per-peer
    share (2 of max_connections = 4) refused the mail server's own processes. Six
    connections of user postfix (say, smtpd processes holding theirs) are all
    greeted now, and the real Postfix still logs in after them."""
    assert server.unix is not None
    holders = as_user(pwd.getpwnam("postfix").pw_uid, server.unix, count=6, hold=60)
    try:
        assert results(holders, 6) == ["handshake"] * 6
        assert postfix.login(ALLOWED_IP, "alice", PW) == (235, "2.7.0 Authentication successful")
        assert "reason=max_connections" not in server.log()
        server.wait_log("reason=handshake_timeout")  # silent ones are closed anyway
    finally:
        holders.kill()
        holders.wait()


def test_postfix_reconnects_after_the_idle_timeout(
    postfix: PostfixInstance, server: ServerProcess
) -> None:
    """smtpd connects at EHLO; the idle timeout closes that connection; AUTH later in
    the same session still works (over a UNIX socket Postfix's write fails and it
    reconnects once)."""
    with smtplib.SMTP(
        "127.0.0.1", postfix.port, source_address=(ALLOWED_IP, 0), timeout=30
    ) as smtp:
        smtp.ehlo("client.saslnetauth.test")  # smtpd (re)uses or opens its connection
        time.sleep(2.5)  # idle_timeout = 1: whatever connection smtpd holds is closed
        assert server.log().count("reason=idle") >= 1, server.log()
        code, msg = smtp.docmd(
            "AUTH", "PLAIN " + base64.b64encode(f"\0alice\0{PW}".encode()).decode()
        )
    assert (code, msg) == (235, b"2.7.0 Authentication successful")
