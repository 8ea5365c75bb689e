"""A webmail's IMAP login through Dovecot with ``login_trusted_networks``
(docs/webmail.md): Dovecot 2.4.1 (Debian 13 chroot) with the shipped Lua bridge,
and the policy endpoint with the shipped Dovecot 2.3 and 2.4 snippets (their
``real_remote`` attribute). The client on 127.0.0.1 sends ``ID
("x-originating-ip" ...)`` before LOGIN."""

from __future__ import annotations

import imaplib
import shutil
import socket
from collections.abc import Iterator

import pytest

from tests.peers.test_dovecot24_lua import PW, Bridge
from tests.support.clitools import run
from tests.support.dovecot import Dovecot24Instance, DovecotInstance, passwd_line
from tests.support.net import free_port, peer_tmpdir, require_source_addresses
from tests.support.policy import POLICY_KEYS, policy_snippet, write_secret_config
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

WEBMAIL = "127.0.0.1"
HOME = "192.0.2.7"  # in alice's networks (both modules' users)
AWAY = "198.51.100.7"
TRUSTED = "login_trusted_networks = 127.0.0.0/8\n"
PROXIES = f'[proxies]\nnetworks = ["{WEBMAIL}/32"]\nsession_seconds = 600\n'


class _Imap(imaplib.IMAP4):
    def __init__(self, port: int, source_ip: str) -> None:
        self._source_ip = source_ip
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source_ip, 0)
        )


def webmail_login(port: int, user: str, pw: str, browser: str | None, source: str = WEBMAIL) -> str:
    """LOGIN after the webmail's ID (None: no ID); "OK" or the NO text."""
    imap = _Imap(port, source)
    try:
        if browser is not None:
            typ, _ = imap.xatom("ID", f'("x-originating-ip" "{browser}" "name" "webmail")')
            assert typ == "OK"
        try:
            imap.login(user, pw)
        except imaplib.IMAP4.error as exc:
            return str(exc).split("[vm:")[0]
        return "OK"
    finally:
        imap.shutdown()


@pytest.fixture(scope="module")
def bridge() -> Iterator[Bridge]:
    root = Dovecot24Instance.tmpdir("sna-wmlua-")
    try:
        b = Bridge(root)
        b.config.write_text(b.config.read_text() + PROXIES)
        b.dovecot.extra_config = TRUSTED
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna) as srv:
            b.server = srv
            yield b
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_lua_bridge(bridge: Bridge) -> None:
    require_source_addresses("127.0.0.2")
    port = bridge.dovecot.imap_port
    assert port is not None
    wrong = webmail_login(port, "alice", PW + "x", HOME)
    assert "[AUTHENTICATIONFAILED]" in wrong
    # 2.4 sets real_remote_ip equal to remote_ip without the ID: the bridge sends none,
    # and the webmail host alone (no session yet) is refused like a wrong password
    assert webmail_login(port, "alice", PW, None) == wrong
    assert webmail_login(port, "alice", PW, HOME) == "OK"
    assert webmail_login(port, "alice", PW, AWAY) == wrong
    assert webmail_login(port, "alice", PW, None) == wrong  # the refusal ended the session
    # Dovecot trusts 127.0.0.2 too; saslnetauth does not: judged by 127.0.0.2
    assert webmail_login(port, "alice", PW, HOME, source="127.0.0.2") == "OK"  # alice's net
    assert webmail_login(port, "alice", PW, AWAY, source="127.0.0.3") == wrong
    log = bridge.server.log()
    assert f"auth ok: user=alice service=imap rip={HOME} proxy={WEBMAIL}" in log
    assert f"rip={AWAY} proxy={WEBMAIL} reason=network" in log
    assert f"rip=- proxy={WEBMAIL} reason=proxy_without_client_address" in log
    assert "auth ok: user=alice service=imap rip=127.0.0.2 rule=" in log
    assert PW not in log


class Setup:
    dovecot: DovecotInstance
    server: ServerProcess


@pytest.fixture(scope="module", params=["2.3", "2.4"])
def policy(request: pytest.FixtureRequest) -> Iterator[Setup]:
    version: str = request.param
    with peer_tmpdir("sna-wmpol-") as tmp:
        root = Dovecot24Instance.tmpdir("sna-wmpol-") if version == "2.4" else tmp
        try:
            s = Setup()
            db = f"sqlite:///{tmp}/users.db"
            assert run("init", db=db).code == 0
            add = ["user", "add", "alice", "--hash", "{PLAIN}unused", "--net", HOME]
            assert run(*add, db=db).code == 0
            port = free_port()
            config = write_secret_config(
                tmp / "serve.toml",
                f'[policy]\nlisten = "inet:127.0.0.1:{port}"\n{POLICY_KEYS}{PROXIES}',
            )
            snippet = policy_snippet(version, port) + TRUSTED
            assert "real_remote" in snippet
            kind = Dovecot24Instance if version == "2.4" else DovecotInstance
            s.dovecot = kind(
                root / "dovecot",
                passwd=[passwd_line("alice", PW)],
                protocols=("imap",),
                extra_config=snippet,
            )
            with run_server(db, config=config) as s.server, s.dovecot:
                yield s
        finally:
            if root != tmp:
                shutil.rmtree(root, ignore_errors=True)


def test_policy_endpoint(policy: Setup) -> None:
    port = policy.dovecot.imap_port
    assert port is not None
    refused = webmail_login(port, "alice", PW, AWAY)
    assert refused != "OK"
    assert webmail_login(port, "alice", "wrong", AWAY) == refused  # whatever the password
    assert webmail_login(port, "alice", PW, None) == refused  # the proxy alone
    assert webmail_login(port, "alice", PW, HOME) == "OK"
    log = policy.server.wait_log(f"auth ok: user=alice service=imap rip={HOME} proxy={WEBMAIL}")
    assert "reason=proxy_without_client_address via=policy" in log
    assert f"rip={AWAY} proxy={WEBMAIL} reason=network via=policy" in log
    assert PW not in log
