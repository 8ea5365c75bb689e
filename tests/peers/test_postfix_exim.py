"""saslnetauth serve behind a real Postfix and a real Exim (host-checking mode), on
Debian 12 (Postfix 3.7, Exim 4.96: this machine) and Debian 13 (Postfix 3.10, Exim
4.98: the chroot of .ci/debian13).

Postfix runs the shipped dovecot-examples/postfix/main.cf (smtpd_sasl_type =
dovecot) pointed at saslnetauth over a UNIX socket, over TCP, and at the
shipped chroot-relative path private/saslnetauth; Exim runs the shipped
authenticators. The same files serve both releases unchanged. saslnetauth
serve runs on this machine; for Debian 13 its sockets lie inside the chroot.
alice may log in from 127.0.0.2 and ::1 only.
"""

from __future__ import annotations

import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ALLOWED_IP,
    DENIED_IP,
    IPV6_IP,
    EximHostCheck,
    PostfixInstance,
    require_source_addresses,
)
from tests.support.clitools import run
from tests.support.roots import HOST, Root, trixie
from tests.support.serverproc import NOBODY, ServerProcess, as_user, results, run_server

pytestmark = pytest.mark.peer

PW = "P0stfix-pw"
WRONG = "wrong-pw"
MECHS = ["PLAIN", "LOGIN"]


@pytest.fixture(scope="module", params=["debian12", "debian13"])
def root(request: pytest.FixtureRequest) -> Root:
    return HOST if request.param == "debian12" else trixie()


@pytest.fixture(scope="module")
def peer_dir(root: Root) -> Iterator[Path]:
    require_source_addresses(ALLOWED_IP, DENIED_IP)
    with root.tmpdir("sna-pf-") as d:
        yield d


@pytest.fixture(scope="module")
def chroot_postfix(peer_dir: Path, root: Root) -> PostfixInstance:
    """Postfix with the shipped smtpd_sasl_path = private/saslnetauth (prepared, not started)."""
    pf = PostfixInstance(peer_dir / "postfix-chroot", root=root)
    pf.prepare()
    return pf


@pytest.fixture(scope="module")
def server(peer_dir: Path, chroot_postfix: PostfixInstance, root: Root) -> Iterator[ServerProcess]:
    db = f"sqlite:///{peer_dir}/pf.db"
    assert run("init", db=db).code == 0
    for args in (
        ["alice", "--net", ALLOWED_IP, "--net", IPV6_IP],
        ["bob", "--net", "any"],
        ["carol", "--net", ALLOWED_IP, "--disabled"],
    ):
        r = run("user", "add", *args, "--password-stdin", db=db, stdin=PW + "\n")
        assert r.code == 0, r.err
    cfg = peer_dir / "serve.toml"
    # Postfix's smtpd runs as postfix, Exim's -bh as Debian-exim: both must connect.
    # In the Debian 13 chroot they have that tree's uids, which this machine's
    # /etc/passwd does not name: allowed by number, as for a mail server in a container.
    uids = [str(root.user_ids(user)[0]) for user in ("postfix", "Debian-exim")]
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
        f'allowed_users = ["root", "postfix", "Debian-exim", "{uids[0]}", "{uids[1]}"]\n'
    )
    private = chroot_postfix.queue_socket_path()
    with run_server(
        db,
        config=cfg,
        tcp=True,
        failure_delay=0.5,
        workdir=peer_dir,
        args=["--listen", f"unix:{private}"],
    ) as srv:
        yield srv


@pytest.fixture(scope="module", params=["unix", "inet", "shipped-private"])
def postfix(
    request: pytest.FixtureRequest,
    peer_dir: Path,
    server: ServerProcess,
    chroot_postfix: PostfixInstance,
    root: Root,
) -> Iterator[PostfixInstance]:
    if request.param == "unix":
        assert server.unix
        pf = PostfixInstance(peer_dir / "postfix-unix", root.inside(server.unix), root=root)
    elif request.param == "inet":
        sasl_path = f"inet:127.0.0.1:{server.port}"
        pf = PostfixInstance(peer_dir / "postfix-inet", sasl_path, root=root)
    else:
        pf = chroot_postfix
    with pf:
        yield pf


#: The releases each platform's tests must run (a wrong root would pass unnoticed).
RELEASES = {"Debian 12": ("3.7.", "4.96"), "Debian 13": ("3.10.", "4.98")}


def test_the_release_under_test_runs(
    root: Root, chroot_postfix: PostfixInstance, exim: EximHostCheck
) -> None:
    postfix_release, exim_release = RELEASES[root.release]
    assert chroot_postfix.mail_version().startswith(postfix_release)
    assert exim.version().startswith(exim_release)


class TestPostfix:
    @pytest.mark.parametrize("mech", MECHS)
    def test_allowed_network_logs_in_and_relays(self, postfix: PostfixInstance, mech: str) -> None:
        assert postfix.login(ALLOWED_IP, "alice", PW, mech) == (
            235,
            "2.7.0 Authentication successful",
        )
        res = postfix.relay(ALLOWED_IP, "alice", PW, mech)
        assert (res.auth_code, res.rcpt_code) == (235, 250)

    @pytest.mark.parametrize("mech", MECHS)
    def test_correct_password_from_denied_network_fails(
        self, postfix: PostfixInstance, mech: str
    ) -> None:
        code, msg = postfix.login(DENIED_IP, "alice", PW, mech)
        assert code == 535 and msg.startswith("5.7.8 Error: authentication failed")
        res = postfix.relay(DENIED_IP, "alice", PW, mech)
        assert (res.auth_code, res.rcpt_code) == (535, 554)
        assert "Relay access denied" in res.rcpt_message

    def test_denied_network_looks_exactly_like_a_wrong_password(
        self, postfix: PostfixInstance
    ) -> None:
        denied = postfix.login(DENIED_IP, "alice", PW)
        assert denied == postfix.login(ALLOWED_IP, "alice", WRONG)
        assert denied == postfix.login(ALLOWED_IP, "nobody", PW)
        assert denied == postfix.login(ALLOWED_IP, "carol", PW)  # disabled

    def test_inbound_mail_from_denied_address_unaffected(self, postfix: PostfixInstance) -> None:
        assert postfix.inbound(DENIED_IP) == (250, 250, 250)

    @pytest.mark.parametrize("mech", MECHS)
    def test_ipv6_client(self, postfix: PostfixInstance, mech: str) -> None:
        require_source_addresses(IPV6_IP)
        assert postfix.login(IPV6_IP, "alice", PW, mech)[0] == 235

    def test_swaks_and_fail2ban_line(self, postfix: PostfixInstance, server: ServerProcess) -> None:
        rc, out = postfix.swaks(ALLOWED_IP, "alice", PW)
        assert rc == 0, out
        mark = postfix.log_mark()
        rc, out = postfix.swaks(DENIED_IP, "alice", PW, "LOGIN")
        assert rc != 0 and "535 5.7.8" in out
        postfix.wait_log(r"SASL LOGIN authentication failed: .*sasl_username=alice", since=mark)
        assert "rip=127.0.0.3 reason=network credentials_valid=yes" in server.log()

    def test_open_user_from_anywhere(self, postfix: PostfixInstance) -> None:
        assert postfix.login(DENIED_IP, "bob", PW)[0] == 235
        assert postfix.login(DENIED_IP, "bob", WRONG)[0] == 535

    def test_only_the_mail_servers_may_talk_to_the_socket(
        self, postfix: PostfixInstance, server: ServerProcess
    ) -> None:
        """Issue 11 item 10: the socket (mode 0666 here) answers Postfix's smtpd (user
        postfix, allowed by default) and closes a process of another user (nobody)
        before the handshake: it would choose the rip= of its logins itself."""
        assert postfix.login(ALLOWED_IP, "alice", PW)[0] == 235
        assert server.unix is not None
        proc = as_user(NOBODY, server.unix)
        assert results(proc, 1) == ["closed"]
        proc.wait(20)
        log = server.wait_log("connection refused: reason=peer_not_allowed uid=65534")
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        assert f"peer_not_allowed uid={postfix_uid} " not in log
        assert postfix.login(ALLOWED_IP, "alice", PW)[0] == 235


@pytest.fixture(scope="module")
def exim(peer_dir: Path, server: ServerProcess, root: Root) -> EximHostCheck:
    assert server.unix
    return EximHostCheck(peer_dir / "exim", root.inside(server.unix), root=root)


class TestExim:
    @pytest.mark.parametrize("mech", MECHS)
    def test_allowed_and_denied(self, exim: EximHostCheck, mech: str) -> None:
        assert exim.auth(ALLOWED_IP, "alice", PW, mech)[0] == 235
        assert exim.auth(DENIED_IP, "alice", PW, mech)[0] == 535
        assert exim.auth(ALLOWED_IP, "alice", WRONG, mech)[0] == 535

    def test_relay_and_ipv6(self, exim: EximHostCheck, server: ServerProcess) -> None:
        assert exim.relay(ALLOWED_IP, "alice", PW)[:2] == (235, 250)
        assert exim.relay(DENIED_IP, "alice", PW)[:2] == (535, 550)
        require_source_addresses(IPV6_IP)
        assert exim.auth(IPV6_IP, "alice", PW)[0] == 235  # Exim sends rip fully expanded
        assert exim.auth("::ffff:127.0.0.2", "alice", PW)[0] == 235
        assert "auth ok: user=alice service=smtp rip=::1" in server.log()
