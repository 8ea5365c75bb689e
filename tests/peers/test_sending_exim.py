"""The shipped Exim DATA ACL (dovecot-examples/exim/saslnetauth-sending-acl.conf) with
a real Exim in host-checking mode (``exim4 -bh``): its ${readsocket} asks the same
[sending] socket as Postfix, so an authenticated sender gets N messages (250), then
450 4.7.1 at the end of DATA."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require_source_addresses
from tests.support.clitools import init_with_user
from tests.support.exim import EximHostCheck, _b64
from tests.support.net import PeerError, peer_tmpdir
from tests.support.postfix import OUTSIDE_RECIPIENT
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ACL = REPO / "dovecot-examples" / "exim" / "saslnetauth-sending-acl.conf"
SHIPPED_SOCKET = "/run/saslnetauth/sending"
PW = "ex1m-sending"
HOME = "127.0.0.2"
N = 2


class EximWithSendingAcl(EximHostCheck):
    """The harness's Exim with the shipped data ACL, pointed at ``policy``."""

    def __init__(self, tmpdir: Path, socket_path: Path, policy: Path) -> None:
        self.policy = policy
        super().__init__(tmpdir, socket_path)

    def config_text(self) -> str:
        acl = SHIPPED_ACL.read_text()
        if SHIPPED_SOCKET not in acl:
            raise PeerError(f"the shipped ACL no longer reads {SHIPPED_SOCKET}")
        text = super().config_text()
        text = text.replace(
            "acl_smtp_rcpt = acl_check_rcpt\n",
            "acl_smtp_rcpt = acl_check_rcpt\nacl_smtp_data = acl_check_data\n",
        )
        return text.replace(
            "begin acl\n", "begin acl\n\n" + acl.replace(SHIPPED_SOCKET, str(self.policy)) + "\n", 1
        )


@pytest.fixture(scope="module")
def exim() -> Iterator[tuple[EximWithSendingAcl, ServerProcess]]:
    require_source_addresses(HOME)
    with peer_tmpdir("sna-exs-") as tmp:
        db = init_with_user(f"sqlite:///{tmp}/e.db", "alice", PW, HOME)
        policy = tmp / "policy"
        cfg = tmp / "serve.toml"
        cfg.write_text(
            '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
            f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = {N}\n'
            "recipients_per_hour = 100\nsuspend_after = 0\n"
        )
        with run_server(db, config=cfg, workdir=tmp) as server:
            server.wait_log("sending policy listening")
            assert server.unix is not None
            yield EximWithSendingAcl(tmp / "exim", Path(server.unix), policy), server


def _message(ex: EximWithSendingAcl) -> tuple[int, str]:
    """AUTH, one message with two recipients; (end of DATA code, transcript)."""
    session = ex.session(
        HOME,
        [
            "EHLO client.test",
            "AUTH PLAIN " + _b64(f"\0alice\0{PW}"),
            "MAIL FROM:<alice@saslnetauth.test>",
            f"RCPT TO:<{OUTSIDE_RECIPIENT}>",
            "RCPT TO:<postmaster@saslnetauth.test>",
            "DATA",
            "Subject: exim limit test",
            "",
            "hello",
            ".",
            "QUIT",
        ],
    )
    codes = [r.code for r in session.replies]
    assert codes[:6] == [220, 250, 235, 250, 250, 250], session.transcript
    assert codes[6] == 354, session.transcript
    return codes[7], session.transcript


def test_exim_data_acl_defers_over_the_limit(
    exim: tuple[EximWithSendingAcl, ServerProcess],
) -> None:
    ex, server = exim
    got = [_message(ex) for _ in range(N + 1)]
    assert [code for code, _ in got[:N]] == [250] * N
    code, transcript = got[N]
    assert code == 450, transcript
    assert re.search(r"450 4\.7\.1 Too many messages in the last hour", transcript)
    log = server.wait_log("sending deferred")
    assert "user=alice credential=main client=127.0.0.2" in log
