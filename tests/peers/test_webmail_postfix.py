"""Webmail and proxies with real peers (docs/webmail.md): Dovecot's own client
(``doveadm auth test -x rip=... -x real_rip=...``, the request Dovecot sends for a
webmail's IMAP login with ``login_trusted_networks``) and a real Postfix: XCLIENT
from an authorized host, and a webmail's SMTP AUTH from localhost that only a live
webmail session admits."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PostfixInstance, peer_tmpdir
from tests.support.clitools import run
from tests.support.peers import require_binary
from tests.support.postfix import _auth, _connect
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "W3bmail-p0stfix"
WEBMAIL = "127.0.0.1"  # the webmail host: a trusted proxy
HOME = "203.0.113.9"  # alice's network (a browser at home)
AWAY = "198.51.100.7"  # nobody's
SESSION = 2.0


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    with peer_tmpdir("sna-wm-") as d:
        yield d


@pytest.fixture(scope="module")
def db(peer_dir: Path) -> str:
    url = f"sqlite:///{peer_dir}/wm.db"
    assert run("init", db=url).code == 0
    for name in ("alice", "bob"):
        r = run("user", "add", name, "--password-stdin", "--net", HOME, db=url, stdin=PW)
        assert r.code == 0, r.err
    # what an admin who wanted webmail to work did before: never matched any more
    assert run("net", "add", "127.0.0.0/8", db=url).code == 0
    return url


@pytest.fixture(scope="module")
def server(peer_dir: Path, db: str) -> Iterator[ServerProcess]:
    cfg = peer_dir / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
        'allowed_users = ["root", "postfix"]\n'
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        f'[proxies]\nnetworks = ["{WEBMAIL}/32"]\nsession_seconds = {SESSION}\n'
    )
    with run_server(db, config=cfg, workdir=peer_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, server: ServerProcess) -> Iterator[PostfixInstance]:
    main_cf = {"smtpd_authorized_xclient_hosts": "127.0.0.0/8"}
    with PostfixInstance(peer_dir / "postfix", server.unix, main_cf=main_cf) as pf:
        yield pf


def imap_login(server: ServerProcess, user: str, pw: str, browser: str) -> bool:
    """The auth request of a webmail's IMAP login through Dovecot, by Dovecot's client."""
    doveadm = require_binary("doveadm")
    cmd = [doveadm, "auth", "test", "-a", str(server.unix), "-x", f"rip={browser}"]
    cmd += ["-x", f"real_rip={WEBMAIL}", "-x", "service=imap", user, pw]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert ("auth succeeded" in out) != ("auth failed" in out), out
    return "auth succeeded" in out


def smtp_auth(pf: PostfixInstance, user: str, pw: str, xclient: str | None = None) -> int:
    """SMTP AUTH from the webmail host, after ``XCLIENT ADDR=`` when given."""
    with _connect("127.0.0.1", pf.port, WEBMAIL) as smtp:
        if xclient is not None:
            code, msg = smtp.docmd("XCLIENT", f"ADDR={xclient}")
            assert code == 220, msg  # a new greeting: Postfix trusts the host
            smtp.ehlo()
        code, _ = _auth(smtp, user, pw, "PLAIN")
        smtp.quit()
    return code


def test_doveadm_forwarded_logins(server: ServerProcess) -> None:
    assert imap_login(server, "alice", PW, HOME)
    assert not imap_login(server, "alice", PW, AWAY)
    assert not imap_login(server, "alice", PW + "x", HOME)
    server.wait_log(f"auth ok: user=alice service=imap rip={HOME} proxy={WEBMAIL}")
    server.wait_log(f"rip={AWAY} proxy={WEBMAIL} reason=network credentials_valid=yes")


def test_xclient_forwards_the_address_postfix_trusts(postfix: PostfixInstance) -> None:
    assert smtp_auth(postfix, "alice", PW, xclient=HOME) == 235
    assert smtp_auth(postfix, "alice", PW, xclient=AWAY) == 535
    assert smtp_auth(postfix, "alice", PW + "x", xclient=HOME) == 535


def test_webmail_smtp_auth_only_inside_a_session(
    postfix: PostfixInstance, server: ServerProcess, db: str
) -> None:
    assert smtp_auth(postfix, "alice", PW) == 535  # no session: the proxy alone
    assert imap_login(server, "alice", PW, HOME)
    assert smtp_auth(postfix, "alice", PW) == 235
    assert smtp_auth(postfix, "bob", PW) == 535  # another user
    # a refused forwarded login ends the session at once
    assert not imap_login(server, "alice", PW, AWAY)
    assert smtp_auth(postfix, "alice", PW) == 535
    # after the window
    assert imap_login(server, "alice", PW, HOME)
    assert smtp_auth(postfix, "alice", PW) == 235
    time.sleep(SESSION + 0.2)
    assert smtp_auth(postfix, "alice", PW) == 535
    # an app password's session, then the app password deleted
    r = run("user", "app-password", "add", "alice", "--label", "wm", "--net", HOME, "--json", db=db)
    assert r.code == 0, r.err
    token = str(json.loads(r.out)["password"])
    assert imap_login(server, "alice", token, HOME)
    assert smtp_auth(postfix, "alice", token) == 235
    assert smtp_auth(postfix, "alice", PW) == 535  # the main password has no session
    assert run("user", "app-password", "del", "alice", "wm", db=db).code == 0
    assert smtp_auth(postfix, "alice", token) == 535
    log = server.log()
    assert (
        f"user=alice service=smtp rip=- proxy={WEBMAIL} reason=proxy_without_client_address" in log
    )
    assert f'proxy={WEBMAIL} rule="webmail session from {HOME}:' in log
    assert PW not in log and token not in log
