"""The shipped Lua bridge (dovecot-examples/dovecot-2.4/) in Debian 13's real Dovecot 2.4.1.

Dovecot runs in the chroot built by .ci/debian13; ``saslnetauth serve`` runs
on the host with its auth-client and userdb sockets inside the chroot's tree.
Every login goes through Dovecot's auth-worker, the Lua script and the
server's engine: doveadm auth test, a real IMAP LOGIN through imap-login,
and userdb lookups with doveadm user.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.dovecot import Dovecot24Instance
from tests.support.net import peer_tmpdir, require_source_addresses
from tests.support.peers import missing
from tests.support.postfix import PostfixInstance
from tests.support.roots import TRIXIE_DIR as TRIXIE
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

EXAMPLES = Path(__file__).resolve().parents[2] / "dovecot-examples" / "dovecot-2.4"
PW = "lua bridge pw"


def _db(tmp: Path) -> str:
    db = f"sqlite:///{tmp}/users.db"
    assert run("init", db=db).code == 0
    add = ["user", "add", "alice", "--password-stdin", "--net", "127.0.0.2"]
    add += ["--net", "2001:db8::/32", "--net", "192.0.2.0/24"]
    assert run(*add, db=db, stdin=PW + "\n").code == 0
    add = ["user", "add", "bob", "--password-stdin", "--disabled", "--net", "any"]
    assert run(*add, db=db, stdin=PW + "\n").code == 0
    return db


class Bridge:
    """Dovecot 2.4 with the shipped Lua script, and the saslnetauth serve it asks."""

    server: ServerProcess

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = _db(root)
        self.sna = root / "sna"
        self.sna.mkdir(mode=0o755)
        self.config = root / "serve.toml"
        self.config.write_text(
            f'[serve]\nuserdb_listen = "unix:{self.sna}/userdb"\nsocket_mode = "0666"\n'
            "workers = 1\n[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        )
        script = root / "saslnetauth.lua"
        shutil.copy(EXAMPLES / "saslnetauth.lua", script)
        self.dovecot = Dovecot24Instance(root / "dovecot", protocols=("imap",), auth_inet=True)
        d = self.dovecot
        settings = {
            "socket": d.inside(self.sna / "auth-client"),
            "userdb_socket": d.inside(self.sna / "userdb"),
            "timeout": "5",
            "uid": "nobody",
            "gid": "nogroup",
            "home": d.inside(d.home_dir) + "/%u",
        }
        # the shipped snippet, with this test's paths
        text = (EXAMPLES / "auth-saslnetauth-lua.conf.ext").read_text()
        for shipped, here in (
            ("/etc/dovecot/saslnetauth.lua", d.inside(script)),
            ("/run/saslnetauth/auth-client", settings["socket"]),
            ("/run/saslnetauth/userdb", settings["userdb_socket"]),
            ("= vmail", "= nobody"),
            ("gid = nobody", "gid = nogroup"),
            ("/var/vmail/%u", settings["home"]),
            ("timeout = 10", "timeout = 5"),
        ):
            assert shipped in text
            text = text.replace(shipped, here)
        d.passdb, d.userdb = text, ""


@pytest.fixture(scope="module")
def bridge() -> Iterator[Bridge]:
    root = Dovecot24Instance.tmpdir("sna-lua-")
    try:
        b = Bridge(root)
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna) as srv:
            b.server = srv
            yield b
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("user", "password", "rip", "ok"),
    [
        ("alice", PW, "127.0.0.2", True),
        ("alice", "wrong", "127.0.0.2", False),
        ("alice", PW, "127.0.0.3", False),  # right password, denied network
        ("nosuch", PW, "127.0.0.2", False),
        ("bob", PW, "127.0.0.2", False),  # disabled
        ("alice", PW, "2001:db8::25", True),
        ("alice", PW, "2001:db9::25", False),
        ("alice", PW, "::ffff:192.0.2.7", True),  # IPv4-mapped: the IPv4 rule applies
        ("alice", PW, "::ffff:198.51.100.7", False),
        ("ALICE", PW, "127.0.0.2", True),
    ],
)
def test_doveadm_auth_test(bridge: Bridge, user: str, password: str, rip: str, ok: bool) -> None:
    res = bridge.dovecot.auth_test(user, password, rip, service="imap")
    assert res.ok is ok, res.output
    assert not res.tempfail, res.output  # a denial is a plain failure, like a wrong password
    if ok:
        assert res.fields.get("user") == "alice"  # saslnetauth's canonical name


def test_imap_login_through_imap_login(bridge: Bridge) -> None:
    require_source_addresses("127.0.0.2", "127.0.0.3")
    assert bridge.dovecot.imap_login("127.0.0.2", "alice", PW) is True
    assert bridge.dovecot.imap_login("127.0.0.3", "alice", PW) is False
    assert bridge.dovecot.imap_login("127.0.0.2", "alice", "wrong") is False
    log = bridge.server.log()
    assert "service=imap" in log


def test_postfix_through_dovecot24(bridge: Bridge) -> None:
    """Postfix (smtpd_sasl_type = dovecot) on Dovecot 2.4's auth socket, Lua bridge behind."""
    require_source_addresses("127.0.0.2", "127.0.0.3")
    assert bridge.dovecot.auth_inet is not None
    with peer_tmpdir("sna-pf24-") as tmp, PostfixInstance(tmp, bridge.dovecot.auth_inet) as pf:
        assert pf.login("127.0.0.2", "alice", PW)[0] == 235
        denied = pf.login("127.0.0.3", "alice", PW)
        wrong = pf.login("127.0.0.2", "alice", "wrong")
        assert denied[0] == wrong[0] == 535
        assert denied[1] == wrong[1]  # the same text: the network denial is not visible
        assert bridge.server.log().count("service=smtp") >= 3


def test_userdb_lookup(bridge: Bridge) -> None:
    found, out = bridge.dovecot.user_lookup("alice")
    assert found is True, out
    assert "uid\t65534" in out and "/home/alice" in out
    assert bridge.dovecot.user_lookup("bob")[0] is False  # disabled
    assert bridge.dovecot.user_lookup("nosuch")[0] is False


def test_network_change_takes_effect_on_next_login(bridge: Bridge) -> None:
    d = bridge.dovecot
    assert not d.auth_test("alice", PW, "198.51.100.9", service="imap").ok
    assert run("user", "net", "add", "alice", "198.51.100.0/24", db=bridge.db).code == 0
    assert d.auth_test("alice", PW, "198.51.100.9", service="imap").ok
    assert run("user", "net", "del", "alice", "198.51.100.0/24", db=bridge.db).code == 0
    assert not d.auth_test("alice", PW, "198.51.100.9", service="imap").ok


def test_password_never_logged(bridge: Bridge) -> None:
    bridge.dovecot.auth_test("alice", PW, "127.0.0.3", service="imap")
    b64 = base64.b64encode(f"\0alice\0{PW}".encode()).decode()
    for text in (bridge.dovecot.log(), bridge.server.log()):
        assert PW not in text and b64 not in text


def test_server_stopped_tempfails_then_reconnects() -> None:
    """No saslnetauth -> temporary failure (never OK, never a plain FAIL); once it is back,
    the auth-worker's stale connection is replaced without any Dovecot restart."""
    root = Dovecot24Instance.tmpdir("sna-lua-")
    try:
        b = Bridge(root)
        with b.dovecot:
            with run_server(b.db, config=b.config, workdir=b.sna) as srv:
                for _ in range(5):
                    assert b.dovecot.auth_test("alice", PW, "127.0.0.2", service="imap").ok
                srv.stop()
                # the auth-worker kept its connection: fewer connections than logins
                stopped = re.search(r"stopped: connections=(\d+) .*?\bok=(\d+)", srv.log())
                assert stopped is not None, srv.log()
                assert int(stopped.group(2)) == 5 and int(stopped.group(1)) < 5
            res = b.dovecot.auth_test("alice", PW, "127.0.0.2", service="imap")
            assert res.tempfail, res.output
            assert "saslnetauth" in b.dovecot.log()
            with run_server(b.db, config=b.config, workdir=b.sna):
                res = b.dovecot.auth_test("alice", PW, "127.0.0.2", service="imap")
                assert res.ok, res.output
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("cache_key", [None, "%{user}"])
def test_auth_cache(cache_key: str | None) -> None:
    """The auth-cache trap, measured. The shipped script defines no
    auth_passdb_get_cache_key, and Dovecot 2.4.1 then never caches its answers: even
    with auth_cache_size set, every login runs the script (and the address check).
    A script given a cache key without the address is answered from the cache: a
    password accepted from an allowed network is then accepted from a denied one.
    The shipped snippet also keeps auth_cache_size = 0, so neither can happen."""
    root = Dovecot24Instance.tmpdir("sna-lua-")
    try:
        b = Bridge(root)
        assert "auth_cache_size = 0" in b.dovecot.passdb
        b.dovecot.extra_config = "auth_cache_size = 10M\nauth_cache_ttl = 1h\n"
        if cache_key is not None:
            with (root / "saslnetauth.lua").open("a") as f:
                f.write(f'\nfunction auth_passdb_get_cache_key() return "{cache_key}" end\n')
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna):
            d = b.dovecot
            assert not d.auth_test("alice", PW, "127.0.0.3", service="imap").ok
            assert d.auth_test("alice", PW, "127.0.0.2", service="imap").ok
            # the same password from the denied address again
            cached = d.auth_test("alice", PW, "127.0.0.3", service="imap").ok
            assert cached is (cache_key is not None)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_server_that_never_answers_tempfails() -> None:
    """A saslnetauth that accepts and greets but never answers: the script's timeout
    turns the login into a temporary failure (never OK, never a plain FAIL)."""
    import socket
    import threading

    root = Dovecot24Instance.tmpdir("sna-lua-")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nDONE\n")
            held.append(conn)  # read nothing, answer nothing

    try:
        b = Bridge(root)
        b.dovecot.passdb = b.dovecot.passdb.replace("timeout = 5", "timeout = 1")
        listener.bind(str(b.sna / "auth-client"))
        (b.sna / "auth-client").chmod(0o666)
        listener.listen()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with b.dovecot:
            res = b.dovecot.auth_test("alice", PW, "127.0.0.2", service="imap")
            assert res.tempfail, res.output
            assert "timeout" in b.dovecot.log()
        stop.set()
        thread.join()
    finally:
        for conn in held:
            conn.close()
        listener.close()
        shutil.rmtree(root, ignore_errors=True)


def test_lmtp_delivery_uses_the_userdb() -> None:
    """LMTP asks the Lua userdb: an enabled user gets the mail, unknown and disabled
    users are refused at RCPT."""
    import smtplib

    if not (TRIXIE / "usr/lib/dovecot/lmtp").exists():
        missing(f"dovecot-lmtpd in the Debian 13 chroot {TRIXIE} (.ci/debian13)")
    root = Dovecot24Instance.tmpdir("sna-lua-")
    try:
        b = Bridge(root)
        b.dovecot.protocols = ("imap", "lmtp")
        with b.dovecot, run_server(b.db, config=b.config, workdir=b.sna):
            lmtp = smtplib.LMTP(str(b.dovecot.base_dir / "lmtp"))
            try:
                lmtp.ehlo("test")
                assert lmtp.mail("sender@example.org")[0] == 250
                assert lmtp.rcpt("alice")[0] == 250
                assert lmtp.rcpt("nosuch")[0] == 550
                assert lmtp.rcpt("bob")[0] == 550  # disabled
                assert lmtp.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
            finally:
                lmtp.close()
            delivered = list((b.dovecot.mail_dir / "alice").rglob("*"))
            assert any(p.is_file() and b"hello" in p.read_bytes() for p in delivered)
    finally:
        shutil.rmtree(root, ignore_errors=True)
