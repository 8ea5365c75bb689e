"""The real-peer harness, proven against Dovecot's own auth server as the reference.

Dovecot 2.3 enforces ``allow_nets=`` itself, so with Dovecot in the place
where saslnetauth will sit, every client (Postfix over a UNIX socket, over
TCP and over the shipped chroot-relative path; Exim's dovecot authenticator;
doveadm; IMAP) must show exactly the behaviour saslnetauth's real-peer tests
will require: a correct password from outside the allowed networks fails like
a wrong one, inbound mail needs no login, loopback is not trusted for relay.

Users: alice may log in from 127.0.0.2 and ::1 only; bob from anywhere
(no allow_nets); dave from 127.0.0.2 only, used where a log line must be
unique to one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ALLOWED_IP,
    DENIED_IP,
    IPV6_IP,
    DovecotInstance,
    EximHostCheck,
    PeerError,
    PostfixInstance,
    doveadm_auth_test,
    free_port,
    passwd_line,
    peer_tmpdir,
    require_source_addresses,
)
from tests.support.exim import SHIPPED_AUTHENTICATORS, SHIPPED_SOCKET, render_authenticators
from tests.support.net import tcp_listening
from tests.support.postfix import (
    SHIPPED_MAIN_CF,
    SHIPPED_MASTER_CF,
    SHIPPED_SASL_PATH,
    UNTRUSTED_MYNETWORKS,
    render_main_cf,
    set_main_cf_param,
)

PASSWORD = "Corr3ct-h0rse"
WRONG = "wrong-password"
ALICE = "alice"
BOB = "bob"
DAVE = "dave"
MECHS = ["PLAIN", "LOGIN"]

# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    require_source_addresses(ALLOWED_IP, DENIED_IP)
    with peer_tmpdir() as d:
        yield d


@pytest.fixture(scope="module")
def postfix_chroot_prepared(peer_dir: Path) -> PostfixInstance:
    """A Postfix keeping the shipped ``smtpd_sasl_path = private/saslnetauth`` (not started)."""
    pf = PostfixInstance(peer_dir / "postfix-chroot")
    pf.prepare()
    return pf


@pytest.fixture(scope="module")
def dovecot(peer_dir: Path, postfix_chroot_prepared: PostfixInstance) -> Iterator[DovecotInstance]:
    """Reference auth server: Dovecot with allow_nets, on its socket, TCP and Postfix's queue."""
    dc = DovecotInstance(
        peer_dir / "dovecot",
        passwd=[
            passwd_line(ALICE, PASSWORD, allow_nets=f"{ALLOWED_IP},{IPV6_IP}"),
            passwd_line(BOB, PASSWORD),
            passwd_line(DAVE, PASSWORD, allow_nets=ALLOWED_IP),
        ],
        protocols=("imap",),
        auth_inet=True,
        auth_sockets=[postfix_chroot_prepared.queue_socket_path()],
        auth_debug=True,
    )
    with dc:
        yield dc


@pytest.fixture(scope="module", params=["unix", "inet", "shipped-private"])
def postfix(
    request: pytest.FixtureRequest,
    peer_dir: Path,
    dovecot: DovecotInstance,
    postfix_chroot_prepared: PostfixInstance,
) -> Iterator[PostfixInstance]:
    """Postfix whose smtpd_sasl_path is Dovecot's UNIX socket, its TCP listener, or the shipped one."""
    if request.param == "unix":
        pf = PostfixInstance(peer_dir / "postfix-unix", dovecot.auth_socket)
    elif request.param == "inet":
        assert dovecot.auth_inet is not None
        pf = PostfixInstance(peer_dir / "postfix-inet", dovecot.auth_inet)
    else:
        pf = postfix_chroot_prepared
    with pf:
        yield pf


@pytest.fixture(scope="module")
def exim(peer_dir: Path, dovecot: DovecotInstance) -> EximHostCheck:
    return EximHostCheck(peer_dir / "exim", dovecot.auth_socket)


# -- rendering of the shipped configs (no peer needed) ---------------------------


def test_set_main_cf_param_replaces_continued_value_and_keeps_comments() -> None:
    text = (
        "a = 1\n#smtpd_sasl_path = old\nsmtpd_sasl_path = x,\n    y\nb = 2\nsmtpd_sasl_path = z\n"
    )
    out, found = set_main_cf_param(text, "smtpd_sasl_path", "new")
    assert found
    assert out == "a = 1\n#smtpd_sasl_path = old\nsmtpd_sasl_path = new\nb = 2\n"
    out, found = set_main_cf_param(text, "mynetworks", "192.0.2.1/32")
    assert not found and out == text


def test_render_main_cf_keeps_shipped_settings() -> None:
    shipped = SHIPPED_MAIN_CF.read_text()
    out = render_main_cf(shipped, {"smtpd_sasl_path": "inet:127.0.0.1:1", "mynetworks": "x"})
    assert "smtpd_sasl_path = inet:127.0.0.1:1\n" in out
    assert f"smtpd_sasl_path = {SHIPPED_SASL_PATH}\n" not in out
    assert out.rstrip().endswith("mynetworks = x")
    for line in ("smtpd_sasl_auth_enable = yes", "smtpd_sasl_type = dovecot"):
        assert f"\n{line}\n" in out


def test_render_exim_authenticators_points_every_socket() -> None:
    out = render_authenticators(SHIPPED_AUTHENTICATORS.read_text(), "/x/auth")
    assert out.count("server_socket = /x/auth") == 2
    assert SHIPPED_SOCKET not in out
    with pytest.raises(PeerError):
        render_authenticators("a:\n  driver = dovecot\n  server_socket = /elsewhere\n", "/x")


# -- Postfix --------------------------------------------------------------------


@pytest.mark.peer
class TestPostfix:
    def test_runs_the_shipped_main_cf(self, postfix: PostfixInstance) -> None:
        conf = postfix.postconf(
            "smtpd_sasl_type", "smtpd_relay_restrictions", "mynetworks", "smtpd_tls_auth_only"
        )
        assert conf["smtpd_sasl_type"] == "dovecot"
        assert conf["smtpd_relay_restrictions"] == (
            "permit_sasl_authenticated, reject_unauth_destination"
        )
        assert conf["mynetworks"] == UNTRUSTED_MYNETWORKS
        assert conf["smtpd_tls_auth_only"] == "no"
        assert postfix.sasl_socket_file is None or postfix.sasl_socket_file.is_socket()

    @pytest.mark.parametrize("mech", MECHS)
    def test_login_from_allowed_network(self, postfix: PostfixInstance, mech: str) -> None:
        assert postfix.login(ALLOWED_IP, ALICE, PASSWORD, mech) == (
            235,
            "2.7.0 Authentication successful",
        )

    @pytest.mark.parametrize("mech", MECHS)
    def test_login_from_allowed_ipv6(self, postfix: PostfixInstance, mech: str) -> None:
        require_source_addresses(IPV6_IP)
        assert postfix.login(IPV6_IP, ALICE, PASSWORD, mech)[0] == 235

    @pytest.mark.parametrize("mech", MECHS)
    def test_correct_password_from_foreign_network_fails(
        self, postfix: PostfixInstance, mech: str
    ) -> None:
        code, msg = postfix.login(DENIED_IP, ALICE, PASSWORD, mech)
        assert (code, msg.split(":")[0]) == (535, "5.7.8 Error")

    def test_foreign_network_looks_like_wrong_password(self, postfix: PostfixInstance) -> None:
        assert postfix.login(DENIED_IP, ALICE, PASSWORD) == postfix.login(ALLOWED_IP, ALICE, WRONG)

    def test_user_without_allow_nets_logs_in_from_anywhere(self, postfix: PostfixInstance) -> None:
        assert postfix.login(DENIED_IP, BOB, PASSWORD)[0] == 235
        assert postfix.login(DENIED_IP, BOB, WRONG)[0] == 535

    def test_relay_after_login_from_allowed_network(self, postfix: PostfixInstance) -> None:
        res = postfix.relay(ALLOWED_IP, ALICE, PASSWORD, "LOGIN")
        assert (res.auth_code, res.rcpt_code) == (235, 250)

    def test_no_relay_after_failed_login_from_foreign_network(
        self, postfix: PostfixInstance
    ) -> None:
        res = postfix.relay(DENIED_IP, ALICE, PASSWORD)
        assert (res.auth_code, res.rcpt_code) == (535, 554)
        assert "Relay access denied" in res.rcpt_message

    def test_loopback_is_not_trusted_for_relay(self, postfix: PostfixInstance) -> None:
        assert postfix.relay(ALLOWED_IP, None, None).rcpt_code == 554

    def test_inbound_mail_needs_no_login(self, postfix: PostfixInstance) -> None:
        assert postfix.inbound(DENIED_IP) == (250, 250, 250)

    def test_failed_login_is_logged_for_fail2ban(self, postfix: PostfixInstance) -> None:
        mark = postfix.log_mark()
        assert postfix.login(DENIED_IP, ALICE, PASSWORD, "LOGIN")[0] == 535
        postfix.wait_log(
            r"unknown\[127\.0\.0\.3\]: SASL LOGIN authentication failed: .*sasl_username=alice",
            since=mark,
        )

    def test_reference_server_denied_on_network(
        self, postfix: PostfixInstance, dovecot: DovecotInstance
    ) -> None:
        mark = dovecot.log_mark()
        assert postfix.login(DENIED_IP, DAVE, PASSWORD)[0] == 535
        dovecot.wait_log(r"passwd-file\(dave,127\.0\.0\.3\): allow_nets check failed", since=mark)

    def test_swaks(self, postfix: PostfixInstance) -> None:
        rc, out = postfix.swaks(ALLOWED_IP, ALICE, PASSWORD)
        assert (rc, "<-  235 2.7.0 Authentication successful" in out) == (0, True)
        rc, out = postfix.swaks(DENIED_IP, ALICE, PASSWORD, "LOGIN")
        assert (rc, "<** 535 5.7.8 Error: authentication failed" in out) == (28, True)


@pytest.mark.peer
def test_shipped_master_cf_submission_is_valid(peer_dir: Path) -> None:
    """The shipped submission service parses and passes ``postfix check`` (not started).

    prepare() raises when postconf warns, e.g. about an unknown ``-o`` parameter.
    """
    pf = PostfixInstance(peer_dir / "postfix-master", extra_master_cf=SHIPPED_MASTER_CF.read_text())
    pf.prepare()
    assert pf.config_warnings() == ""
    pf.run(pf.postfix, "-c", str(pf.config_dir), "check")
    out = pf.run(pf.postconf_bin, "-c", str(pf.config_dir), "-M", "submission/inet")
    assert out.split()[:7] == ["submission", "inet", "n", "-", "y", "-", "-"]
    assert "-o smtpd_tls_auth_only=yes" in out
    assert "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject" in out
    assert "warning" not in pf.maillog()


# -- Exim -----------------------------------------------------------------------


@pytest.mark.peer
class TestExim:
    @pytest.mark.parametrize("mech", MECHS)
    @pytest.mark.parametrize("ip", [ALLOWED_IP, IPV6_IP, f"[{IPV6_IP}]"])
    def test_login_from_allowed_network(self, exim: EximHostCheck, ip: str, mech: str) -> None:
        code, transcript = exim.auth(ip, ALICE, PASSWORD, mech)
        assert code == 235, transcript
        assert "235 Authentication succeeded" in transcript

    @pytest.mark.parametrize("mech", MECHS)
    def test_correct_password_from_foreign_network_fails(
        self, exim: EximHostCheck, mech: str
    ) -> None:
        code, transcript = exim.auth(DENIED_IP, ALICE, PASSWORD, mech)
        assert code == 535, transcript
        assert "535 Incorrect authentication data" in transcript

    def test_wrong_password_and_open_user(self, exim: EximHostCheck) -> None:
        assert exim.auth(ALLOWED_IP, ALICE, WRONG)[0] == 535
        assert exim.auth(DENIED_IP, BOB, PASSWORD, "LOGIN")[0] == 235

    def test_relay(self, exim: EximHostCheck) -> None:
        assert exim.relay(ALLOWED_IP, ALICE, PASSWORD)[:2] == (235, 250)
        assert exim.relay(DENIED_IP, ALICE, PASSWORD)[:2] == (535, 550)

    def test_connects_to_the_real_socket(
        self, exim: EximHostCheck, dovecot: DovecotInstance
    ) -> None:
        """-bh really talks to the auth server, sending IPv6 rips fully expanded and lip=NULL."""
        mark = dovecot.log_mark()
        assert exim.auth("::ffff:127.0.0.2", BOB, PASSWORD)[0] == 235
        dovecot.wait_log(
            r"client in: AUTH\t\d+\tPLAIN\tservice=smtp\t"
            r"rip=0000:0000:0000:0000:0000:ffff:7f00:0002\tlip=NULL\tnologin\t",
            since=mark,
        )

    def test_unreachable_socket_is_a_temporary_failure(self, peer_dir: Path) -> None:
        dead = EximHostCheck(peer_dir / "exim-dead", peer_dir / "no-such-socket")
        code, transcript = dead.auth(ALLOWED_IP, ALICE, PASSWORD)
        assert code == 435, transcript


# -- doveadm and IMAP -------------------------------------------------------------


@pytest.mark.peer
class TestDoveadm:
    @pytest.mark.parametrize(
        ("rip", "ok"),
        [
            (ALLOWED_IP, True),
            (IPV6_IP, True),
            ("::ffff:127.0.0.2", True),
            (DENIED_IP, False),
            ("::ffff:127.0.0.3", False),
            ("192.0.2.9", False),
            (None, False),  # no address: only the keyword "local" would match
        ],
    )
    def test_auth_test_by_network(
        self, dovecot: DovecotInstance, rip: str | None, ok: bool
    ) -> None:
        res = dovecot.auth_test(ALICE, PASSWORD, rip=rip)
        assert res.ok is ok, res.output
        assert res.fields.get("user") == ALICE

    def test_auth_test_any_socket(
        self, dovecot: DovecotInstance, postfix_chroot_prepared: PostfixInstance
    ) -> None:
        sock = postfix_chroot_prepared.queue_socket_path()
        assert doveadm_auth_test(sock, ALICE, PASSWORD, ALLOWED_IP).ok is True
        assert doveadm_auth_test(sock, ALICE, PASSWORD, DENIED_IP).ok is False
        assert doveadm_auth_test(sock, ALICE, WRONG, ALLOWED_IP).ok is False

    def test_no_verdict_is_an_error_not_a_failure(self, peer_dir: Path) -> None:
        with pytest.raises(PeerError, match="no verdict"):
            doveadm_auth_test(peer_dir / "no-such-socket", ALICE, PASSWORD, ALLOWED_IP)

    def test_user_lookup(self, dovecot: DovecotInstance) -> None:
        found, out = dovecot.user_lookup(BOB)
        assert found is True, out
        assert f"home\t{dovecot.home_dir}/{BOB}" in out
        assert dovecot.user_lookup("nobody-here")[0] is False


@pytest.mark.peer
class TestImap:
    @pytest.mark.parametrize(
        ("ip", "user", "password", "ok"),
        [
            (ALLOWED_IP, ALICE, PASSWORD, True),
            (IPV6_IP, ALICE, PASSWORD, True),
            (DENIED_IP, ALICE, PASSWORD, False),
            (ALLOWED_IP, ALICE, WRONG, False),
            (DENIED_IP, BOB, PASSWORD, True),
        ],
    )
    def test_login(
        self, dovecot: DovecotInstance, ip: str, user: str, password: str, ok: bool
    ) -> None:
        require_source_addresses(ip)
        assert dovecot.imap_login(ip, user, password) is ok


# -- net helpers ------------------------------------------------------------------


@pytest.mark.peer
def test_free_port_is_free_and_instances_listen_on_both_families(
    postfix: PostfixInstance,
) -> None:
    port = free_port()
    assert not tcp_listening("127.0.0.1", port)
    assert tcp_listening("127.0.0.1", postfix.port)
    if postfix.ipv6:
        assert tcp_listening("::1", postfix.port)
