"""Two MX hosts sharing one PostgreSQL database and one Redis (docs/sending.md,
"Several MX hosts"): each host a network namespace with its own address, its own real
Postfix (own config directory, queue and port 25) asking its own ``saslnetauth serve``
(own sockets) for AUTH and for the sending limits (tests/support/mxhosts.py). alice
sends through both hosts in turn: N messages are accepted in total, not 2N, and the
next gets 450 4.7.1 on either host; the deferrals of both hosts add up to
``suspend_after``, after which her AUTH fails (535) on both; ``user unsuspend`` on the
shared database restores 235 on both."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.mxhosts import NetnsRoot, pg_over_socket
from tests.support.net import peer_tmpdir
from tests.support.peers import fresh_database
from tests.support.postfix import (
    OUTSIDE_RECIPIENT,
    PostfixInstance,
    _auth,
    _connect,
    sending_restrictions,
)
from tests.support.redisserver import private_redis
from tests.support.remotehost import RemoteHost, remote_host
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "Tw0-mx-hosts"
N = 3  # messages_per_hour, over both hosts
SMTP = 25  # every host has its own: each listens on its own address


@dataclass
class Mx:
    name: str
    net: RemoteHost  # .address: the host's; .local: ours, the client's as it sees it
    postfix: PostfixInstance
    serve: ServerProcess


def _config(d: Path, redis_url: str) -> Path:
    cfg = d / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
        f'[sending]\nlisten = "unix:{d}/policy"\nmessages_per_hour = {N}\n'
        "recipients_per_hour = 100\nsuspend_after = 2\n"
        f'[state]\nurl = "{redis_url}"\n'
    )
    return cfg


def _start(i: int, net: RemoteHost, db: str, redis_url: str, tmp: Path) -> tuple[Mx, ExitStack]:
    """Host ``mx{i}``: its serve, then its Postfix; the stack that stops them."""
    with ExitStack() as stack:
        d = tmp / f"mx{i}"
        d.mkdir(mode=0o755)
        root = NetnsRoot(f"Debian 12, mx{i}", netns=net.name)
        cfg = _config(d, redis_url)
        serve = stack.enter_context(
            run_server(pg_over_socket(db), config=cfg, workdir=d, wrap=root.wrap)
        )
        serve.wait_log("sending policy listening")
        postfix = PostfixInstance(
            d / "postfix",
            sasl_path=str(serve.unix),
            port=SMTP,
            main_cf=sending_restrictions(d / "policy"),
            root=root,
            listen=net.address,
        )
        mx = Mx(f"mx{i}", net, stack.enter_context(postfix), serve)
        return mx, stack.pop_all()


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[list[Mx], str]]:
    with ExitStack() as stack:
        nets = [stack.enter_context(remote_host()) for _ in range(2)]
        assert nets[0].local != nets[1].local
        db = stack.enter_context(fresh_database("postgresql"))
        init_with_user(db, "alice", PW, *(n.local for n in nets))
        redis = stack.enter_context(private_redis(bind=[n.local for n in nets]))
        tmp = stack.enter_context(peer_tmpdir("sna-2mx-"))
        # both hosts come up at once (each reaches Redis over its own veth)
        with ThreadPoolExecutor(2) as pool:
            started = [
                pool.submit(_start, i, net, db, redis.url(net.local), tmp)
                for i, net in enumerate(nets, 1)
            ]
        mxs = []
        for future in started:  # every host that came up is stopped again
            if future.exception() is None:
                mx, host_stack = future.result()
                stack.enter_context(host_stack)
                mxs.append(mx)
        for future in started:
            if (exc := future.exception()) is not None:
                raise exc
        yield mxs, db


def _session(mx: Mx, password: str, message: bool) -> tuple[int, ...]:
    """(AUTH, RCPT, end of DATA) codes of one session of alice's (0: not reached)."""
    with _connect(mx.net.address, SMTP, mx.net.local) as smtp:
        auth, _ = _auth(smtp, "alice", password, "PLAIN")
        if auth != 235 or not message:
            smtp.quit()
            return (auth,)
        smtp.mail("alice@saslnetauth.test")
        rcpt, _ = smtp.rcpt(OUTSIDE_RECIPIENT)
        data = 0
        if rcpt == 250:
            try:
                data, _ = smtp.data(f"Subject: two MX hosts\r\n\r\nthrough {mx.name}\r\n")
            except smtplib.SMTPDataError as exc:
                data = exc.smtp_code
        smtp.quit()
    return (auth, rcpt, data)


def test_the_limit_and_the_suspension_hold_across_both_hosts(
    hosts: tuple[list[Mx], str],
) -> None:
    mxs, db = hosts
    turns = [mxs[i % 2] for i in range(N + 2)]  # mx1, mx2, mx1, mx2, mx1
    sent = [_session(mx, PW, message=True) for mx in turns]
    assert sent[:N] == [(235, 250, 250)] * N  # N in total: two through mx1, one through mx2
    assert sent[N:] == [(235, 250, 450)] * 2  # deferred on mx2, then on mx1
    for mx in mxs:
        mx.postfix.wait_log(r"450 4\.7\.1 .*Too many messages in the last hour")
        assert f"sending deferred: user=alice credential=main client={mx.net.local}" in (
            mx.serve.log()
        )
    # one deferral on each host: together they reach suspend_after = 2
    assert "credential suspended" in turns[-1].serve.wait_log("credential suspended")
    assert "credential suspended" not in turns[-2].serve.log()
    assert [_session(mx, PW, message=False) for mx in mxs] == [(535,), (535,)]
    for mx in mxs:
        assert "reason=suspended" in mx.serve.log(), mx.name
    r = run("user", "unsuspend", "alice", db=db)
    assert r.code == 0, r.err
    assert [_session(mx, PW, message=False) for mx in mxs] == [(235,), (235,)]
