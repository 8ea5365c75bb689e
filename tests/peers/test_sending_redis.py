"""Sending limits on a real Redis (docs/sending.md, "Several MX hosts"): twenty clients
racing on one user get exactly the limit, with one server and with two servers sharing
Redis; a Redis that stops defers sending while logins go on, and its return needs no
restart. 127.0.0.1:6379 runs on this machine kind (each test its own key prefix); the
outage test runs its own server on a free port. With SASLNETAUTH_TEST_REDIS_SERVER set
(``state_server-server`` in the Debian 13 tier) every test runs against a private server of that
program (tests/support/redisserver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.sending.redisstate import RedisState
from saslnetauth.sending.state import HOUR, Counter, StateError
from saslnetauth.settings import SendingConfig
from saslnetauth.store import SqlStore
from tests.support.clitools import init_with_user, run
from tests.support.metrics import plain, samples
from tests.support.peers import missing, port_open
from tests.support.redisserver import chosen, private_redis, start_redis
from tests.support.sending import (
    behind_one_address,
    connect,
    note,
    ok,
    request,
    sending_server,
)
from tests.support.serverproc import free_port, run_server

pytestmark = pytest.mark.peer

SHARED = "redis://127.0.0.1:6379/0"
N = 7
CLIENTS = 20


@pytest.fixture
def shared_url() -> Iterator[str]:
    """The shared Redis, or a private server of the program the run names."""
    if chosen() is not None:
        with private_redis() as server:
            yield server.url()
        return
    if not port_open("127.0.0.1", 6379):
        missing("Redis on 127.0.0.1:6379")
    yield SHARED


@pytest.fixture
def prefix(shared_url: str) -> Iterator[str]:
    p = f"t{uuid.uuid4().hex[:12]}:"
    yield p
    with redis.Redis.from_url(shared_url) as client:
        for key in client.scan_iter(match=f"{p}*"):
            client.delete(key)


async def _race(
    url: str, paths: list[Path], store: SqlStore, prefix: str, servers: int
) -> list[str]:
    cfg = SendingConfig(messages_per_hour=N, messages_per_day=1000, suspend_after=0)
    async with contextlib.AsyncExitStack() as stack:
        for path in paths[:servers]:  # each server with its own Redis client
            links = await stack.enter_async_context(
                sending_server(path, store, RedisState(url), cfg, prefix=prefix)
            )
            await note(links, ok("alice"))
        clients = [await connect(paths[i % servers]) for i in range(CLIENTS)]
        msgs = [request("END-OF-MESSAGE", instance=f"m{i}") for i in range(CLIENTS)]
        got = await asyncio.gather(*(c.ask(m) for c, m in zip(clients, msgs, strict=True)))
        for c in clients:
            await c.close()
    return list(got)


def test_two_credentials_behind_one_address_in_redis(
    sqlite_store: SqlStore, tmp_path: Path, shared_url: str, prefix: str
) -> None:
    """The one-script decision (TAKE_LINKED) resolves the login map as the embedded
    state does: both credentials counted, the tightest limit, the suspension screen."""
    sqlite_store.add_user("alice", "{PLAIN}x", networks=[NetworkRule.parse("any", scope="user")])
    sqlite_store.add_app_password("alice", "phone", new_token)
    sqlite_store.set_sending_limits("alice", "phone", {"recipients_per_hour": 2})
    cfg = SendingConfig(recipients_per_hour=5, recipients_per_day=50, suspend_after=0)
    shared, alone, after = asyncio.run(
        behind_one_address(tmp_path / "s", sqlite_store, RedisState(shared_url), cfg, prefix)
    )
    assert shared[:2] == ["DUNNO"] * 2 and shared[2].startswith("450 4.7.1")
    assert alone[:3] == ["DUNNO"] * 3 and alone[3].startswith("450 4.7.1")
    assert after[0].startswith("450 4.7.1") and "suspended" in after[0]
    assert "Too many recipients" in after[1]


@pytest.mark.parametrize("servers", [1, 2])
def test_twenty_racing_clients_get_exactly_the_limit(
    sqlite_store: SqlStore, tmp_path: Path, shared_url: str, prefix: str, servers: int
) -> None:
    sqlite_store.add_user("alice", "{PLAIN}x")
    paths = [tmp_path / "a", tmp_path / "b"]
    got = asyncio.run(_race(shared_url, paths, sqlite_store, prefix, servers))
    assert got.count("DUNNO") == N
    assert sum(g.startswith("450 4.7.1") for g in got) == CLIENTS - N


def _ask(path: Path, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n\n") and (chunk := s.recv(4096)):
            buf += chunk
    return buf.decode().removeprefix("action=").strip()


def test_redis_stopped_mid_test(tmp_path: Path) -> None:
    """serve with [state] url on a private Redis: killed, sending defers (451) and logins
    go on; started again, sending is counted again without a restart of serve."""
    port = free_port()
    state_server = start_redis(port)
    try:
        db = init_with_user(f"sqlite:///{tmp_path}/r.db", "alice", "pw-redis", "127.0.0.0/8")
        policy = tmp_path / "policy"
        cfg = tmp_path / "c.toml"
        mport = free_port()
        cfg.write_text(
            f'[serve]\nmetrics_listen = "inet:127.0.0.1:{mport}"\n'
            f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = 3\n'
            f'[state]\nurl = "redis://127.0.0.1:{port}/0"\ntimeout = 0.3\n'
        )
        with run_server(db, config=cfg, workdir=tmp_path) as server:
            server.wait_log("sending policy listening")
            auth = server.connect()
            auth.handshake()
            assert auth.login_plain("alice", "pw-redis").startswith("OK")
            msg = request("END-OF-MESSAGE", client="127.0.0.2")
            assert [_ask(policy, msg) for _ in range(4)][2:] == [
                "DUNNO",
                "450 4.7.1 Too many messages in the last hour, please try again later",
            ]
            state_server.kill()
            state_server.wait()
            assert _ask(policy, msg).startswith("451 4.3.0")
            assert auth.login_plain("alice", "pw-redis").startswith("OK")  # logins go on
            assert _ask(policy, request("RCPT", user="")) == "DUNNO"
            state_server = start_redis(port)  # empty: nothing was kept on disk
            assert auth.login_plain("alice", "pw-redis").startswith("OK")
            assert _ask(policy, msg) == "DUNNO"
            log = server.wait_log("sending limits available again")
            assert "sending limits unavailable" in log
            url = f"http://127.0.0.1:{mport}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                got = samples(resp.read().decode())
            defer = plain("saslnetauth_sending_total", result="defer", limit="messages_per_hour")
            assert got[defer] == 1
            assert got[plain("saslnetauth_sending_total", result="unavailable", limit="-")] == 1
            auth.close()
    finally:
        state_server.kill()
        state_server.wait()


def test_counters_and_suspension_outlive_a_serve_restart(
    tmp_path: Path, shared_url: str, prefix: str
) -> None:
    """serve with [state] url, stopped and started again: the counters it left in Redis
    (or Valkey) still count, and the suspension it wrote to the database still stops
    AUTH, as before the restart (issue 24's acceptance)."""
    db = init_with_user(f"sqlite:///{tmp_path}/r.db", "alice", "pw-restart", "127.0.0.0/8")
    policy = tmp_path / "policy"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = 3\nsuspend_after = 2\n'
        f'[state]\nurl = "{shared_url}"\nprefix = "{prefix}"\n'
    )
    msg = request("END-OF-MESSAGE", client="127.0.0.2")
    with run_server(db, config=cfg, workdir=tmp_path) as server:
        server.wait_log("sending policy listening")
        auth = server.connect()
        auth.handshake()
        assert auth.login_plain("alice", "pw-restart").startswith("OK")
        assert [_ask(policy, msg) for _ in range(2)] == ["DUNNO", "DUNNO"]
        auth.close()
    with run_server(db, config=cfg, workdir=tmp_path) as server:
        server.wait_log("sending policy listening")
        # the login link is in the state store too: no new AUTH needed
        got = [_ask(policy, msg) for _ in range(2)]
        assert got[0] == "DUNNO"
        assert got[1].startswith("450 4.7.1 Too many messages in the last hour")
    with run_server(db, config=cfg, workdir=tmp_path) as server:
        server.wait_log("sending policy listening")
        assert _ask(policy, msg).startswith("450 4.7.1")  # the second deferral suspends
        auth = server.connect()
        auth.handshake()
        assert auth.login_plain("alice", "pw-restart").startswith("FAIL")
        auth.close()
    with run_server(db, config=cfg, workdir=tmp_path) as server:
        server.wait_log("sending policy listening")
        auth = server.connect()
        auth.handshake()
        assert auth.login_plain("alice", "pw-restart").startswith("FAIL")  # still suspended
        auth.close()
    assert "SUSPENDED" in run("user", "show", "alice", db=db).out


async def _takes(
    url: str, calls: int, limit: int, spoil: str | None = None
) -> tuple[list[object], int]:
    """``calls`` decisions at once on one counter of ``limit`` (and, with ``spoil``, one on
    a key that holds a string): what each got, and the round trips they took."""
    state = RedisState(url)
    try:
        counter = Counter("race:alice", HOUR, limit)

        async def one(c: Counter) -> object:
            try:
                return (await state.take([c], 1, 1_000_000.0)).ok
            except StateError as exc:
                return exc

        before = state.scripts.round_trips
        jobs = [one(counter) for _ in range(calls)]
        if spoil is not None:
            jobs.insert(calls // 2, one(Counter(spoil, HOUR, limit)))
        got = await asyncio.gather(*jobs)
        return list(got), state.scripts.round_trips - before
    finally:
        await state.close()


def test_decisions_made_at_once_share_round_trips_and_stay_exact() -> None:
    """Scripts called while a batch is on its way leave together (one pipeline), each
    still atomic: 60 decisions at once on a limit of 25 pass exactly 25, in a few round
    trips instead of 60; a server that lost its scripts (SCRIPT FLUSH) gets them again;
    a script that fails fails its own decision only."""
    with private_redis() as server:
        url = server.url()
        got, trips = asyncio.run(_takes(url, 60, 25))
        assert got.count(True) == 25 and got.count(False) == 35
        assert 1 <= trips <= 10, trips
        with redis.Redis.from_url(url) as client:
            client.flushall()
            client.script_flush()
            client.set("spoiled", "a string, not a counter")
        # a call alone goes without a pipeline: the same reload, the same errors
        assert asyncio.run(_takes(url, 1, 25)) == ([True], 2)  # NOSCRIPT, loaded, again
        alone, _ = asyncio.run(_takes(url, 0, 25, spoil="spoiled"))
        assert len(alone) == 1 and isinstance(alone[0], StateError)
        assert "WRONGTYPE" in str(alone[0])
        with redis.Redis.from_url(url) as client:
            client.script_flush()
        got, _ = asyncio.run(_takes(url, 30, 25, spoil="spoiled"))
        errors = [g for g in got if isinstance(g, StateError)]
        assert len(errors) == 1 and "WRONGTYPE" in str(errors[0])
        assert got.count(True) == 24 and got.count(False) == 6


def test_a_batch_cut_short_fails_each_of_its_decisions() -> None:
    """A server that stops answering: every decision of the batch on its way and those
    waiting behind it get a StateError within the timeout (none waits for ever)."""
    with private_redis() as server:
        url = server.url()
        assert asyncio.run(_takes(url, 1, 5))[0] == [True]  # the scripts are loaded
        server.proc.send_signal(signal.SIGSTOP)
        try:
            got, _ = asyncio.run(asyncio.wait_for(_takes(url, 20, 5), 30))
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert all(isinstance(g, StateError) for g in got), got
