"""The policy endpoint in front of a Dovecot passdb: real Dovecot 2.3 (host) and 2.4.1 (chroot).

Dovecot keeps its own passwd-file passwords and asks ``saslnetauth serve``
(``[policy] listen``) with the shipped snippet (auth-policy-saslnetauth.conf.ext,
check_before_auth). Shows: allowed / denied networks with right and wrong
passwords, users unknown to saslnetauth, IPv6 and IPv4-mapped addresses, a
real IMAP LOGIN, live network changes, reports reaching the log and the
record, and that a stopped saslnetauth refuses every login.
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.dovecot import Dovecot24Instance, DovecotInstance, passwd_line
from tests.support.net import PeerError, peer_tmpdir, require_source_addresses
from tests.support.policy import POLICY_KEYS, POLICY_SECRET, policy_snippet, write_secret_config
from tests.support.serverproc import ServerProcess, free_port, run_server

pytestmark = pytest.mark.peer

PW = "policy pw"


class Setup:
    dovecot: DovecotInstance
    server: ServerProcess
    db: str
    port: int


@pytest.fixture(scope="module", params=["2.3", "2.4"])
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    version: str = request.param
    with peer_tmpdir("sna-pol-") as tmp:
        root = Dovecot24Instance.tmpdir("sna-pol-") if version == "2.4" else tmp
        try:
            yield from _setup(version, tmp, root)
        finally:
            if root != tmp:
                shutil.rmtree(root, ignore_errors=True)


def _setup(version: str, tmp: Path, root: Path) -> Iterator[Setup]:
    s = Setup()
    s.db = f"sqlite:///{tmp}/users.db"
    assert run("init", db=s.db).code == 0
    add = ["user", "add", "alice", "--hash", "{PLAIN}unused", "--net", "127.0.0.2"]
    add += ["--net", "2001:db8::/32", "--net", "192.0.2.0/24"]
    assert run(*add, db=s.db).code == 0
    assert run("user", "add", "bob", "--hash", "{PLAIN}x", "--disabled", db=s.db).code == 0
    port = s.port = free_port()
    # global networks re-read on every login (the default trusts a copy for 1 s)
    config = write_secret_config(
        tmp / "serve.toml",
        f'global_cache_seconds = 0\n[policy]\nlisten = "inet:127.0.0.1:{port}"\n{POLICY_KEYS}',
    )
    snippet = policy_snippet(version, port)  # the shipped snippet, with the secret
    assert "auth_policy_reject_on_fail = yes" in snippet
    kind = Dovecot24Instance if version == "2.4" else DovecotInstance
    users = [passwd_line(u, PW) for u in ("alice", "bob", "carol")]
    s.dovecot = kind(root / "dovecot", passwd=users, protocols=("imap",), extra_config=snippet)
    with run_server(s.db, config=config) as s.server, s.dovecot:
        yield s


@pytest.mark.parametrize(
    ("user", "password", "rip", "ok"),
    [
        ("alice", PW, "127.0.0.2", True),
        ("alice", "wrong", "127.0.0.2", False),
        ("alice", PW, "127.0.0.3", False),  # right password, outside alice's networks
        ("alice", "wrong", "127.0.0.3", False),
        ("carol", PW, "127.0.0.2", False),  # unknown to saslnetauth, no global network
        ("bob", PW, "127.0.0.2", False),  # disabled in saslnetauth
        ("nosuch", PW, "127.0.0.2", False),
        ("alice", PW, "2001:db8::7", True),
        ("alice", PW, "2001:db9::7", False),
        ("alice", PW, "::ffff:192.0.2.7", True),
        ("alice", PW, "::ffff:198.51.100.7", False),
    ],
)
def test_doveadm_auth_test(setup: Setup, user: str, password: str, rip: str, ok: bool) -> None:
    res = setup.dovecot.auth_test(user, password, rip, service="imap")
    assert res.ok is ok, res.output


def test_reports_reach_log(setup: Setup) -> None:
    setup.dovecot.auth_test("alice", PW, "127.0.0.3", service="imap")
    setup.server.wait_log("reason=network via=policy")
    setup.dovecot.auth_test("alice", "wrong", "127.0.0.2", service="imap")
    text = setup.server.wait_log("auth fail: user=alice service=imap rip=127.0.0.2")
    assert PW not in text


def test_imap_login(setup: Setup) -> None:
    require_source_addresses("127.0.0.2", "127.0.0.3")
    assert setup.dovecot.imap_login("127.0.0.2", "alice", PW) is True
    assert setup.dovecot.imap_login("127.0.0.2", "alice", "wrong") is False
    # a policy refusal before auth: what the client sees, whatever the password
    seen = []
    for password in (PW, "wrong"):
        try:
            seen.append(setup.dovecot.imap_login("127.0.0.3", "alice", password))
        except PeerError as exc:
            seen.append(str(exc).split("failed: ", 1)[-1].split("[vm:")[0])
    assert "[ALERT] Authentication failed." in str(seen[0])  # measured: NO [ALERT] <msg>
    assert seen[0] == seen[1]  # the same answer for the right and a wrong password


def test_global_network_for_unknown_user_takes_effect(setup: Setup) -> None:
    d = setup.dovecot
    assert not d.auth_test("carol", PW, "198.51.100.9", service="imap").ok
    assert run("net", "add", "198.51.100.0/24", "--service", "imap", db=setup.db).code == 0
    try:
        assert d.auth_test("carol", PW, "198.51.100.9", service="imap").ok
        assert not d.auth_test("carol", "wrong", "198.51.100.9", service="imap").ok
    finally:
        assert run("net", "del", "198.51.100.0/24", db=setup.db).code == 0
    assert not d.auth_test("carol", PW, "198.51.100.9", service="imap").ok


def _post(
    port: int, command: str, fields: dict[str, object], header: str | None
) -> tuple[int, object]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"X-API-Key": header} if header is not None else {}
        c.request("POST", f"/?command={command}", json.dumps(fields), headers)
        resp = c.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        c.close()


def test_requests_without_the_secret_are_refused(setup: Setup) -> None:
    """Issue 21, item 1, with Dovecot asking through the shipped snippet (with the
    secret): a local client without it, or with a wrong one, is answered 401 and
    changes nothing: no auth log line (fail2ban), no brake, no enumeration."""
    forged = {"login": "alice", "remote": "192.0.2.77", "protocol": "imap", "success": False}
    for header in (None, "wrong", POLICY_SECRET + "x"):
        for _ in range(6):
            assert _post(setup.port, "report", forged, header)[0] == 401
        success = {**forged, "success": True}
        assert _post(setup.port, "report", success, header)[0] == 401
        assert _post(setup.port, "allow", forged, header)[0] == 401
    text = setup.server.wait_log("policy request refused: no or wrong api header")
    assert "rip=192.0.2.77" not in text
    # the brake of 192.0.2.77 did not grow: Dovecot's allow is answered without a tarpit
    assert _post(setup.port, "allow", forged, POLICY_SECRET) == (200, {"status": 0})
    res = setup.dovecot.auth_test("alice", PW, "192.0.2.77", service="imap")
    assert res.ok, res.output
    text = setup.server.wait_log("auth ok: user=alice service=imap rip=192.0.2.77")
    assert "auth fail: user=alice service=imap rip=192.0.2.77" not in text


def test_main_password_services(setup: Setup) -> None:
    """Dovecot's passdb holds the main password: limited to smtp, it is refused for
    imap (before auth, whatever the password) and still works for smtp."""
    d = setup.dovecot
    assert run("user", "set", "alice", "--main-password-services", "smtp", db=setup.db).code == 0
    try:
        assert d.auth_test("alice", PW, "127.0.0.2", service="smtp").ok
        assert not d.auth_test("alice", PW, "127.0.0.2", service="imap").ok
        setup.server.wait_log("rip=127.0.0.2 reason=app_password_required via=policy")
    finally:
        run("user", "set", "alice", "--main-password-services", "default", db=setup.db)
    assert d.auth_test("alice", PW, "127.0.0.2", service="imap").ok


def test_zz_server_stopped_refuses(setup: Setup) -> None:
    """Last in the module: stops the server. Dovecot alone would let everyone in."""
    setup.server.stop()
    res = setup.dovecot.auth_test("alice", PW, "127.0.0.2", service="imap")
    assert not res.ok, res.output


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_api_header(version: str) -> None:
    """Dovecot sends the shipped auth_policy_server_api_header (its placeholder replaced
    by the secret); a server expecting another value refuses every request, and Dovecot
    then refuses the login."""
    with peer_tmpdir("sna-polh-") as tmp:
        root = Dovecot24Instance.tmpdir("sna-polh-") if version == "2.4" else tmp
        try:
            db = f"sqlite:///{tmp}/users.db"
            assert run("init", db=db).code == 0
            add = ["user", "add", "alice", "--hash", "{PLAIN}x", "--net", "127.0.0.2"]
            assert run(*add, db=db).code == 0
            port = free_port()
            snippet = policy_snippet(version, port)
            kind = Dovecot24Instance if version == "2.4" else DovecotInstance
            dc = kind(root / "dovecot", passwd=[passwd_line("alice", PW)], extra_config=snippet)
            with dc:
                for value, ok in ((POLICY_SECRET, True), ("another-secret-0123456789", False)):
                    config = write_secret_config(
                        tmp / f"serve-{ok}.toml",
                        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\n'
                        f'api_header = "X-API-Key: {value}"\n',
                    )
                    with run_server(db, config=config) as srv:
                        srv.wait_log("policy listening")
                        res = dc.auth_test("alice", PW, "127.0.0.2", service="imap")
                        assert res.ok is ok, res.output
        finally:
            if root != tmp:
                shutil.rmtree(root, ignore_errors=True)
