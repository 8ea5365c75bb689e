"""Sending limits behind a real Postfix (docs/sending.md): check_policy_service in
smtpd_recipient_restrictions and smtpd_end_of_data_restrictions, asking
``saslnetauth serve``'s [sending] socket. alice sends N messages (250), the next one
gets 450 4.7.1 (a temporary reply: the client keeps it and retries); after
suspend_after deferrals her next AUTH gets 535, and `user unsuspend` restores 235.
An app password counts apart from the main password, and a login admitted by a
global network gets the outside factor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PostfixInstance, require_source_addresses
from tests.support.clitools import init_with_user, run
from tests.support.net import peer_tmpdir
from tests.support.postfix import _auth, _connect, send_message, sending_restrictions
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "P0stfix-sending"
HOME, GLOBAL = "127.0.0.2", "127.0.0.5"
N = 3  # messages_per_hour


def _send(pf: PostfixInstance, source: str, user: str, password: str) -> tuple[int, ...]:
    """(AUTH, RCPT, end of DATA) codes of one message (0: not reached)."""
    with _connect("127.0.0.1", pf.port, source) as smtp:
        auth, _ = _auth(smtp, user, password, "PLAIN")
        if auth != 235:
            return (auth, 0, 0)
        return (auth, *send_message(smtp, user, "limit test", f"from {user}"))


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[PostfixInstance, ServerProcess, str, str]]:
    require_source_addresses(HOME, GLOBAL)
    with peer_tmpdir("sna-send-") as tmp:
        db = init_with_user(f"sqlite:///{tmp}/s.db", "alice", PW, HOME)
        r = run("user", "add", "carol", "--net", HOME, "--password-stdin", db=db, stdin=PW + "\n")
        assert r.code == 0, r.err
        assert run("net", "add", GLOBAL, db=db).code == 0
        r = run(
            "user", "app-password", "add", "alice", "--label", "phone", "--net", "any",
            "--messages-per-hour", "4", "--json", db=db,
        )  # fmt: skip
        assert r.code == 0, r.err
        token = str(json.loads(r.out)["password"])
        policy = tmp / "policy"
        alerts = tmp / "alerts"
        cfg = tmp / "serve.toml"
        cfg.write_text(
            '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
            f'alert_command = ["sh", "-c", "echo $SASLNETAUTH_EVENT $SASLNETAUTH_USER '
            f'$SASLNETAUTH_CREDENTIAL >> {alerts}"]\n'
            f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = {N}\n'
            "recipients_per_hour = 100\nsuspend_after = 2\noutside_factor = 0.5\n"
        )
        with run_server(db, config=cfg, workdir=tmp) as server:
            server.wait_log("sending policy listening")
            pf = PostfixInstance(
                tmp / "postfix", sasl_path=str(server.unix), main_cf=sending_restrictions(policy)
            )
            with pf:
                yield pf, server, db, token


def test_limit_deferral_suspension_and_unsuspend(
    setup: tuple[PostfixInstance, ServerProcess, str, str],
) -> None:
    pf, server, db, token = setup
    sent = [_send(pf, HOME, "alice", PW) for _ in range(N + 2)]
    assert sent[:N] == [(235, 250, 250)] * N
    assert sent[N:] == [(235, 250, 450)] * 2  # deferred twice: suspend_after = 2
    assert "450 4.7.1" in pf.maillog()
    log = server.wait_log("credential suspended")
    assert "sending deferred: user=alice credential=main client=127.0.0.2" in log
    assert _send(pf, HOME, "alice", PW) == (535, 0, 0)
    assert "reason=suspended" in server.log()
    assert "SUSPENDED: main password" in run("user", "show", "alice", db=db).out
    # the app password is another credential: its own limit (4, outside: 2), not suspended
    phone = [_send(pf, HOME, "alice", token) for _ in range(3)]
    assert phone == [(235, 250, 250), (235, 250, 250), (235, 250, 450)]
    assert run("user", "unsuspend", "alice", db=db).code == 0
    assert _send(pf, HOME, "alice", PW)[0] == 235
    alerts = Path(server.log_path).parent / "alerts"
    assert "suspended alice" in alerts.read_text()


def test_global_network_gets_the_outside_factor(
    setup: tuple[PostfixInstance, ServerProcess, str, str],
) -> None:
    pf, _, _, _ = setup
    # carol's own network is HOME; GLOBAL admits her as a global network: 3 * 0.5 -> 1
    got = [_send(pf, GLOBAL, "carol", PW) for _ in range(2)]
    assert got == [(235, 250, 250), (235, 250, 450)]
    assert [_send(pf, HOME, "carol", PW) for _ in range(2)][1] == (235, 250, 250)
