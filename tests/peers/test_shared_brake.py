"""The brute-force brake shared by every MX host through ``[state] url`` (docs/sending.md,
"Several MX hosts"): two ``saslnetauth serve`` processes, each with its own socket and
/metrics, share one SQLite database and one private redis-server. Wrong passwords sent
to host A raise the penalty host B applies (seen in B's /metrics and in the keys in
Redis, not in timings); Redis killed mid-test, both hosts go on with their own counts
(one log line, the metric), and its return is noticed without a restart."""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.clitools import init_with_user
from tests.support.metrics import plain, samples
from tests.support.redisserver import start_redis, stop_redis
from tests.support.serverproc import AuthClient, ServerProcess, free_port, run_server

pytestmark = pytest.mark.peer

PW = "pw-shared"
PREFIX = "sb:"
CLIENT_WAITS = "saslnetauth_shared_brake_client_waits_total"
USER_WAITS = "saslnetauth_shared_brake_user_waits_total"


class Host:
    """One MX host: its serve process, an auth connection, its /metrics."""

    def __init__(self, server: ServerProcess, metrics_port: int) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.auth: AuthClient = server.connect()
        self.auth.handshake()

    def login(self, password: str, rip: str) -> str:
        return self.auth.login_plain("alice", password, rip=rip)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url, timeout=10) as resp:  # noqa: S310 - loopback http
            return samples(resp.read().decode())[plain(name)]


@contextlib.contextmanager
def two_hosts(tmp_path: Path, redis_port: int) -> Iterator[tuple[Host, Host]]:
    db = init_with_user(f"sqlite:///{tmp_path}/shared.db", "alice", PW, "127.0.0.0/8")
    with contextlib.ExitStack() as stack:
        hosts = []
        for name in ("a", "b"):
            work = tmp_path / name
            work.mkdir()
            mport = free_port()
            cfg = work / "c.toml"
            cfg.write_text(
                f'[serve]\nmetrics_listen = "inet:127.0.0.1:{mport}"\n'
                "penalty_base = 0.05\npenalty_max = 0.1\nuser_penalty = true\n"
                f'[state]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
                f'prefix = "{PREFIX}"\ntimeout = 0.3\n'
            )
            server = stack.enter_context(run_server(db, config=cfg, workdir=work))
            hosts.append(Host(server, mport))
        try:
            yield hosts[0], hosts[1]
        finally:
            for host in hosts:
                host.auth.close()


@pytest.fixture
def redis_port() -> Iterator[int]:
    port = free_port()
    proc = start_redis(port)
    yield port
    stop_redis(proc)


def _eventually_gone(r: redis.Redis, key: str) -> bool:
    deadline = time.monotonic() + 10
    while r.exists(key):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_guesses_on_one_host_brake_the_other(tmp_path: Path, redis_port: int) -> None:
    """Regression: before the shared brake, host B saw nothing of host A's failures."""
    r = redis.Redis(port=redis_port)
    with two_hosts(tmp_path, redis_port) as (a, b):
        for guess in ("g1", "g2", "g3"):  # distinct: a repeat would not count
            assert a.login(guess, "127.0.0.2").startswith("FAIL")
        assert r.get(f"{PREFIX}bf:c:4:7f000002") == b"3"
        assert 0 < r.ttl(f"{PREFIX}bf:c:4:7f000002") <= 3600
        assert b.metric(CLIENT_WAITS) == 0
        # B waits A's penalty before deciding; the right password still gets in
        assert b.login(PW, "127.0.0.2").startswith("OK")
        assert b.metric(CLIENT_WAITS) == 1
        assert _eventually_gone(r, f"{PREFIX}bf:c:4:7f000002")  # a success clears it
        # the user brake: failures from outside alice's networks, over both hosts
        for i, guess in enumerate(("u1", "u2", "u3"), start=1):
            assert a.login(guess, f"192.0.2.{i}").startswith("FAIL")
        assert r.get(f"{PREFIX}bf:u:alice") == b"3"
        assert b.metric(USER_WAITS) == 0
        assert b.login("u4", "192.0.2.9").startswith("FAIL")
        assert b.metric(USER_WAITS) == 1
        assert r.get(f"{PREFIX}bf:u:alice") == b"4"
        assert all(r.ttl(k) > 0 for k in r.keys(f"{PREFIX}*"))  # every key expires
        assert b.metric("saslnetauth_shared_brake_up") == 1


def _logins_go_on(host: Host, rip: str) -> None:
    for guess in ("d1", "d2", "d3"):
        assert host.login(PW, "127.0.0.2").startswith("OK")
        assert host.login(guess, rip).startswith("FAIL")


def test_redis_killed_and_back(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port)
    try:
        with two_hosts(tmp_path, port) as (a, b):
            assert a.login(PW, "127.0.0.2").startswith("OK")  # connected to Redis
            assert b.login(PW, "127.0.0.2").startswith("OK")
            stop_redis(proc)
            _logins_go_on(a, "127.0.0.3")
            _logins_go_on(b, "127.0.0.3")
            for host in (a, b):
                assert host.server.log().count("shared brake unavailable") == 1
                assert host.metric("saslnetauth_shared_brake_up") == 0
                assert host.metric("saslnetauth_shared_brake_fallbacks_total") == 1
                # this host's own brake still counts (fail closed)
                assert host.metric("saslnetauth_client_most_failures") == 3
            proc = start_redis(port)  # empty: nothing was kept
            for host in (a, b):
                host.server.wait_log("shared brake available again")
                assert host.metric("saslnetauth_shared_brake_up") == 1
            for guess in ("r1", "r2", "r3"):
                assert a.login(guess, "127.0.0.4").startswith("FAIL")
            assert redis.Redis(port=port).get(f"{PREFIX}bf:c:4:7f000004") == b"3"
            waits = b.metric(CLIENT_WAITS)
            assert b.login("r4", "127.0.0.4").startswith("FAIL")
            assert b.metric(CLIENT_WAITS) == waits + 1
            for host in (a, b):
                assert host.metric("saslnetauth_shared_brake_fallbacks_total") == 1
                assert host.server.log().count("shared brake unavailable") == 1
    finally:
        if proc.poll() is None:
            stop_redis(proc)
