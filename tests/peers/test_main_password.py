"""``user set --main-password-services smtp`` through the real peers: Dovecot 2.3 with
saslnetauth-checkpassword (fast path and fallback) and Dovecot 2.4.1 with the shipped
Lua bridge. The main password works for SMTP (Postfix asks Dovecot with service smtp),
is refused on IMAP exactly like a wrong password, and the user's app password still
logs in to IMAP."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.test_checkpassword import FAST, render_example
from tests.peers.test_dovecot24_lua import PW as BRIDGE_PW
from tests.peers.test_dovecot24_lua import Bridge
from tests.support.clitools import init_with_user, run
from tests.support.dovecot import AuthTest, Dovecot24Instance, DovecotInstance
from tests.support.net import peer_tmpdir, require_source_addresses
from tests.support.serverproc import run_server

pytestmark = pytest.mark.peer

PW = "peer main pw"
HOME = "127.0.0.2"


def _restrict(db: str, user: str) -> str:
    """Main password for SMTP only; returns a new app password for any network."""
    r = run("user", "set", user, "--main-password-services", "smtp", db=db)
    assert r.code == 0, r.err
    r = run(
        "user", "app-password", "add", user, "--label", "phone", "--net", "any", "--json", db=db
    )
    assert r.code == 0, r.err
    return str(json.loads(r.out)["password"])


def _reply(res: AuthTest) -> str:
    """What Dovecot answered, without the password it echoes."""
    return "\n".join(line for line in res.output.splitlines() if "pass" not in line.lower())


def _check(
    auth_test: object, imap_login: object, password: str, token: str
) -> tuple[AuthTest, AuthTest]:
    assert callable(auth_test) and callable(imap_login)
    smtp = auth_test("alice", password, rip=HOME, service="smtp")
    assert smtp.ok, smtp.output
    refused = auth_test("alice", password, rip=HOME, service="imap")
    wrong = auth_test("alice", password + "x", rip=HOME, service="imap")
    assert refused.ok is False and not refused.tempfail, refused.output
    assert _reply(refused) == _reply(wrong)  # indistinguishable from a wrong password
    app = auth_test("alice", token, rip="198.51.100.9", service="imap")
    assert app.ok, app.output
    require_source_addresses(HOME)
    assert imap_login(HOME, "alice", password) is False
    assert imap_login(HOME, "alice", token) is True
    return refused, wrong


@pytest.fixture(scope="module")
def dovecot23() -> Iterator[tuple[str, Path, Path, str]]:
    with peer_tmpdir("sna-cpmain-") as tmp:
        db = init_with_user(f"sqlite:///{tmp}/cp.db", "alice", PW, HOME)
        token = _restrict(db, "alice")
        cfg = tmp / "saslnetauth.toml"
        cfg.write_text(f'database_url = "{db}"\n[serve]\npenalty_max = 0\n' + FAST)
        cfg.chmod(0o644)
        yield db, cfg, tmp, token


@pytest.mark.parametrize("path", ["fast", "fallback"])
def test_dovecot23_checkpassword(dovecot23: tuple[str, Path, Path, str], path: str) -> None:
    db, cfg, tmp, token = dovecot23
    sock = tmp / ("auth-client" if path == "fast" else "no-such-socket")
    passdb, _, userdb = render_example(str(sock), cfg, tmp / "home").partition("userdb {")
    with (
        run_server(db, config=cfg, workdir=tmp) as server,
        DovecotInstance(
            tmp / f"dovecot-{path}",
            passdb=passdb,
            userdb="userdb {" + userdb,
            protocols=("imap",),
        ) as dovecot,
    ):
        _check(dovecot.auth_test, dovecot.imap_login, PW, token)
        log = server.log() if path == "fast" else dovecot.log()
        assert re.search(
            r"auth fail: user=alice service=imap rip=127\.0\.0\.2 .*app_password_req", log
        )
        assert re.search(r"auth ok: user=alice service=smtp rip=127\.0\.0\.2 ", log)
        if path == "fallback":
            assert "via=checkpassword" in log
        for text in (server.log(), dovecot.log()):
            assert PW not in text and token not in text


@pytest.fixture(scope="module")
def bridge() -> Iterator[tuple[Bridge, str]]:
    root = Dovecot24Instance.tmpdir("sna-lua-main-")
    try:
        b = Bridge(root)
        token = _restrict(b.db, "alice")
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna) as srv:
            b.server = srv
            yield b, token
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_dovecot24_lua_bridge(bridge: tuple[Bridge, str]) -> None:
    b, token = bridge
    _check(b.dovecot.auth_test, b.dovecot.imap_login, BRIDGE_PW, token)
    log = b.server.log()
    assert "service=imap rip=127.0.0.2 reason=app_password_required" in log
    # back to the default: the main password works on IMAP again
    assert run("user", "set", "alice", "--main-password-services", "default", db=b.db).code == 0
    assert b.dovecot.auth_test("alice", BRIDGE_PW, rip=HOME, service="imap").ok
