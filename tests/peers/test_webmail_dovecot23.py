"""A webmail's IMAP login through a real Dovecot 2.3 with ``login_trusted_networks``
and saslnetauth-checkpassword (docs/webmail.md): the client on 127.0.0.1 sends
``ID ("x-originating-ip" ...)`` before LOGIN, Dovecot forwards it as the rip and
hands the connecting address over as ``AUTH_REAL_RIP``; saslnetauth judges the
browser's address. Both paths: the running server and the in-process fallback."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.test_checkpassword import render_example
from tests.support import ALLOWED_IP, require_source_addresses
from tests.support.clitools import run
from tests.support.dovecot import DovecotInstance
from tests.support.net import peer_tmpdir
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "W3bmail-d0vecot"
WEBMAIL = "127.0.0.1"
HOME = "203.0.113.9"
AWAY = "198.51.100.7"
TRUSTED = "login_trusted_networks = 127.0.0.0/8\n"
FAILED = "[AUTHENTICATIONFAILED] Authentication failed."


class _Imap(imaplib.IMAP4):
    def __init__(self, port: int, source_ip: str) -> None:
        self._source_ip = source_ip
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source_ip, 0)
        )


def webmail_login(port: int, user: str, pw: str, browser: str | None, source: str = WEBMAIL) -> str:
    """LOGIN as a webmail does: the browser's address in the ID first (None: no ID).
    Returns "OK" or the NO text."""
    imap = _Imap(port, source)
    try:
        if browser is not None:
            typ, _ = imap.xatom("ID", f'("x-originating-ip" "{browser}" "name" "webmail")')
            assert typ == "OK"
        try:
            imap.login(user, pw)
        except imaplib.IMAP4.error as exc:
            return str(exc)
        return "OK"
    finally:
        imap.shutdown()


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, object]]:
    require_source_addresses(ALLOWED_IP)
    with peer_tmpdir("sna-wm23-") as tmp:
        db = f"sqlite:///{tmp}/wm.db"
        assert run("init", db=db).code == 0
        r = run("user", "add", "alice", "--password-stdin", "--net", HOME, db=db, stdin=PW)
        assert r.code == 0, r.err
        cfg = tmp / "saslnetauth.toml"
        cfg.write_text(
            f'database_url = "{db}"\n'
            "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
            f'[proxies]\nnetworks = ["{WEBMAIL}/32"]\nsession_seconds = 600\n'
        )
        cfg.chmod(0o644)
        yield {"db": db, "cfg": cfg, "tmp": tmp}


def _dovecot(world: dict[str, object], sock: str, name: str) -> DovecotInstance:
    tmp, cfg = world["tmp"], world["cfg"]
    assert isinstance(tmp, Path) and isinstance(cfg, Path)
    passdb, _, userdb = render_example(sock, cfg, tmp / "home").partition("userdb {")
    return DovecotInstance(
        tmp / name,
        passdb=passdb,
        userdb="userdb {" + userdb,
        protocols=("imap",),
        extra_config=TRUSTED,
    )


def _cases(dovecot: DovecotInstance) -> None:
    port = dovecot.imap_port
    assert port is not None
    wrong = webmail_login(port, "alice", PW + "x", HOME)
    assert FAILED in wrong
    # without the ID (no session yet): refused like a wrong password
    assert webmail_login(port, "alice", PW, None) == wrong
    assert webmail_login(port, "alice", PW, HOME) == "OK"
    assert webmail_login(port, "alice", PW, AWAY) == wrong
    # that refusal ended the session the allowed login opened: no ID is refused again
    assert webmail_login(port, "alice", PW, None) == wrong
    # a trusted network of Dovecot that is not a saslnetauth proxy: judged by itself
    assert webmail_login(port, "alice", PW, HOME, source=ALLOWED_IP) == wrong
    assert PW not in dovecot.log()


def test_fast_path(world: dict[str, object]) -> None:
    db, cfg, tmp = world["db"], world["cfg"], world["tmp"]
    assert isinstance(db, str) and isinstance(cfg, Path) and isinstance(tmp, Path)
    with (
        run_server(db, config=cfg, workdir=tmp) as server,
        _dovecot(world, str(tmp / "auth-client"), "dovecot") as dovecot,
    ):
        assert isinstance(server, ServerProcess)
        _cases(dovecot)
        log = server.log()
    assert f"auth ok: user=alice service=imap rip={HOME} proxy={WEBMAIL}" in log
    assert f"rip={AWAY} proxy={WEBMAIL} reason=network" in log
    assert f"rip=- proxy={WEBMAIL} reason=proxy_without_client_address" in log
    assert f"rip={ALLOWED_IP} reason=network" in log
    assert PW not in log


def test_in_process_fallback(world: dict[str, object]) -> None:
    tmp = world["tmp"]
    assert isinstance(tmp, Path)
    with _dovecot(world, str(tmp / "no-such-socket"), "dovecot-fallback") as dovecot:
        _cases(dovecot)
        log = dovecot.log()
    assert f"rip={HOME} proxy={WEBMAIL}" in log and "via=checkpassword" in log
    assert "reason=proxy_without_client_address" in log
