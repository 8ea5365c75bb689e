"""App passwords through the real peers: Dovecot 2.3 with saslnetauth-checkpassword (the
fast path and the in-process fallback) and Dovecot 2.4.1 with the shipped Lua bridge."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.peers.test_checkpassword import FAST, render_example
from tests.peers.test_dovecot24_lua import Bridge
from tests.support.clitools import init_with_user, run
from tests.support.dovecot import Dovecot24Instance, DovecotInstance
from tests.support.net import peer_tmpdir, require_source_addresses
from tests.support.serverproc import run_server

pytestmark = pytest.mark.peer

PW = "peer main pw"


def _app(db: str, user: str, label: str, *args: str) -> str:
    r = run("user", "app-password", "add", user, "--label", label, *args, "--json", db=db)
    assert r.code == 0, r.err
    return str(json.loads(r.out)["password"])


def _expire(db: str, label: str) -> None:
    with sa.create_engine(db).begin() as conn:
        conn.execute(
            sa.text("UPDATE app_passwords SET expires_at = '2020-01-01 00:00:00' WHERE label = :l"),
            {"l": label},
        )


def _wrong(token: str) -> str:
    return token[:-1] + ("a" if token[-1] != "a" else "b")


def _tokens(db: str, user: str) -> dict[str, str]:
    tokens = {
        "phone": _app(db, user, "phone", "--service", "imap", "--net", "any"),
        "office": _app(db, user, "office", "--net", "127.0.0.5"),
        "trip": _app(db, user, "trip", "--net", "any"),
    }
    _expire(db, "trip")
    return tokens


def _cases(t: dict[str, str]) -> list[tuple[str, str, str, bool]]:
    """(password, rip, service, accepted)"""
    return [
        (t["phone"], "198.51.100.9", "imap", True),
        (t["phone"].upper(), "198.51.100.9", "imap", True),
        (_wrong(t["phone"]), "198.51.100.9", "imap", False),
        (t["phone"], "198.51.100.9", "pop3", False),  # wrong service
        (t["office"], "127.0.0.5", "imap", True),
        (t["office"], "127.0.0.2", "imap", False),  # the user's network is not the office's
        (t["trip"], "198.51.100.9", "imap", False),  # expired
        (PW, "127.0.0.2", "imap", True),
        (PW, "198.51.100.9", "imap", False),  # the main password stays in its network
    ]


@pytest.fixture(scope="module")
def dovecot23() -> Iterator[tuple[str, Path, Path, dict[str, str]]]:
    with peer_tmpdir("sna-cpap-") as tmp:
        db = init_with_user(f"sqlite:///{tmp}/cp.db", "alice", PW, "127.0.0.2")
        tokens = _tokens(db, "alice")
        cfg = tmp / "saslnetauth.toml"
        cfg.write_text(f'database_url = "{db}"\n[serve]\npenalty_max = 0\n' + FAST)
        cfg.chmod(0o644)
        yield db, cfg, tmp, tokens


@pytest.mark.parametrize("path", ["fast", "fallback"])
def test_checkpassword(dovecot23: tuple[str, Path, Path, dict[str, str]], path: str) -> None:
    db, cfg, tmp, tokens = dovecot23
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
        for password, rip, service, ok in _cases(tokens):
            res = dovecot.auth_test("alice", password, rip=rip, service=service)
            assert res.ok is ok, (rip, service, res.output)
            assert not res.tempfail, res.output
        require_source_addresses("127.0.0.2", "127.0.0.5")
        assert dovecot.imap_login("127.0.0.5", "alice", tokens["office"]) is True
        assert dovecot.imap_login("127.0.0.2", "alice", tokens["office"]) is False
        log = server.log() if path == "fast" else dovecot.log()
        assert "credential=phone" in log
        assert re.search(r"auth fail: .*credential=trip .*reason=expired", log)
        if path == "fallback":
            assert "via=checkpassword" in log
        for text in (server.log(), dovecot.log()):
            for token in tokens.values():
                assert token not in text and token.replace("-", "") not in text
    # the fallback writes the last use itself, before it execs the reply program
    listed = json.loads(run("user", "app-password", "list", "alice", "--json", db=db).out)
    assert {a["label"]: a["last_used_at"] is not None for a in listed} == {
        "phone": True,
        "office": True,
        "trip": False,
    }


@pytest.fixture(scope="module")
def bridge() -> Iterator[tuple[Bridge, dict[str, str]]]:
    root = Dovecot24Instance.tmpdir("sna-lua-ap-")
    try:
        b = Bridge(root)
        tokens = _tokens(b.db, "alice")
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna) as srv:
            b.server = srv
            yield b, tokens
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_dovecot24_lua_bridge(bridge: tuple[Bridge, dict[str, str]]) -> None:
    b, tokens = bridge
    # the bridge's user alice has 127.0.0.2, 2001:db8::/32 and 192.0.2.0/24 of her own
    cases = [c for c in _cases(tokens) if c[0] != PW]
    cases += [(b_pw, "127.0.0.2", "imap", True) for b_pw in ("lua bridge pw",)]
    for password, rip, service, ok in cases:
        res = b.dovecot.auth_test("alice", password, rip=rip, service=service)
        assert res.ok is ok, (rip, service, res.output)
        assert not res.tempfail, res.output
        if ok:
            assert res.fields.get("user") == "alice"
    require_source_addresses("127.0.0.2", "127.0.0.5")
    assert b.dovecot.imap_login("127.0.0.5", "alice", tokens["office"]) is True
    assert b.dovecot.imap_login("127.0.0.2", "alice", tokens["office"]) is False
    # deleted: the next login fails
    assert run("user", "app-password", "del", "alice", "office", db=b.db).code == 0
    assert not b.dovecot.auth_test("alice", tokens["office"], "127.0.0.5", service="imap").ok
    log = b.server.log()
    assert "credential=phone" in log and "credential=office reason=network" in log
    for text in (log, b.dovecot.log()):
        for token in tokens.values():
            assert token not in text and token.replace("-", "") not in text
