"""Two MX hosts sharing one PostgreSQL database and one Redis (docs/sending.md,
"Several MX hosts"): each host a network namespace with its own address, its own real
Postfix (own config directory, queue and port 25) asking its own ``saslnetauth serve``
(own sockets) for AUTH and for the sending limits (tests/support/mxhosts.py). alice
sends through both hosts in turn: N messages are accepted in total, not 2N, and the
next gets 450 4.7.1 on either host; the deferrals of both hosts add up to
``suspend_after``, after which her AUTH fails (535) on both; ``user unsuspend`` on the
shared database restores 235 on both."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.mxhosts import NetnsRoot, pg_over_socket
from tests.support.net import peer_tmpdir
from tests.support.peers import fresh_database
from tests.support.postfix import (
    PostfixInstance,
    _auth,
    _connect,
    send_message,
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


def _link(net: RemoteHost) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Interface(f"{net.local}/30").network


def _postfix(d: Path, net: RemoteHost) -> PostfixInstance:
    """The host's Postfix, asking the serve of ``d`` (run_server's ``workdir``)."""
    return PostfixInstance(
        d / "postfix",
        sasl_path=str(d / "auth-client"),
        port=SMTP,
        main_cf=sending_restrictions(d / "policy"),
        root=NetnsRoot(f"Debian 12, {d.name}", netns=net.name),
        listen=net.address,
    )


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[list[Mx], str]]:
    with ExitStack() as stack:
        nets = [stack.enter_context(remote_host())]
        while len(nets) < 2:  # two different /30s (each is drawn at random)
            net = stack.enter_context(remote_host())
            if _link(net) != _link(nets[0]):
                nets.append(net)
        db = stack.enter_context(fresh_database("postgresql"))
        redis = stack.enter_context(private_redis(bind=[n.local for n in nets]))
        tmp = stack.enter_context(peer_tmpdir("sna-2mx-"))
        dirs = [tmp / f"mx{i}" for i in (1, 2)]
        for d in dirs:
            d.mkdir(mode=0o755)
        postfixes = [_postfix(d, net) for d, net in zip(dirs, nets, strict=True)]
        serves = [  # each reaches Redis over its own veth, PostgreSQL through its socket
            run_server(
                pg_over_socket(db),
                config=_config(d, redis.url(net.local)),
                workdir=d,
                wrap=NetnsRoot("", netns=net.name).wrap,
            )
            for d, net in zip(dirs, nets, strict=True)
        ]
        # everything starts at once: a Postfix needs its serve only when a client comes
        started: list[tuple[AbstractContextManager[Any], Future[Any]]] = []
        try:
            with ThreadPoolExecutor(4) as pool:
                started += [(pf, pool.submit(pf.__enter__)) for pf in postfixes]
                init_with_user(db, "alice", PW, *(n.local for n in nets))
                started += [(cm, pool.submit(cm.__enter__)) for cm in serves]
        finally:  # every one that came up is stopped again, each Postfix before the serves
            for cm, future in started[len(postfixes) :] + started[: len(postfixes)]:
                if future.exception() is None:
                    stack.push(cm)
        for _, future in started:
            if (exc := future.exception()) is not None:
                raise exc
        mxs = []
        for i, (net, pf, (_, serve)) in enumerate(
            zip(nets, postfixes, started[len(postfixes) :], strict=True), 1
        ):
            server = serve.result()
            server.wait_log("sending policy listening")
            mxs.append(Mx(f"mx{i}", net, pf, server))
        yield mxs, db


def _session(mx: Mx, password: str, message: bool) -> tuple[int, ...]:
    """(AUTH, RCPT, end of DATA) codes of one session of alice's (0: not reached)."""
    with _connect(mx.net.address, SMTP, mx.net.local) as smtp:
        auth, _ = _auth(smtp, "alice", password, "PLAIN")
        if auth != 235 or not message:
            smtp.quit()
            return (auth,)
        return (auth, *send_message(smtp, "alice", "two MX hosts", f"through {mx.name}"))


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
