"""A real Postfix login while idle holders fill the policy port (issue 21, item 2).

Under ``ulimit -n 1024`` two processes of ``nobody`` holding idle TCP connections
to the policy port used up the server's descriptors: a login on the auth socket
took 24.3 s and the log got a traceback per failed accept(). Now the policy
listener has its own connection limit (and a first-byte timeout), the limits
are checked against RLIMIT_NOFILE at start, and the auth socket keeps answering.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, PostfixInstance, peer_tmpdir, require_source_addresses
from tests.support.clitools import run
from tests.support.serverproc import NOBODY, ServerProcess, free_port, hold_tcp, run_server

pytestmark = pytest.mark.peer

PW = "P0stfix-fds"
#: RLIMIT_NOFILE of the server: far fewer descriptors than the holders' connections.
NOFILE = 256
HOLDERS = 2
PER_HOLDER = 300
#: Seconds well below the old stall (24.3 s) and far above a normal login (well
#: under a second): fails only when the login is stuck behind the holders again.
STUCK = 10.0


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    require_source_addresses(ALLOWED_IP)
    with peer_tmpdir("sna-pffd-") as d:
        yield d


@pytest.fixture(scope="module")
def policy_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(peer_dir: Path, policy_port: int) -> Iterator[ServerProcess]:
    db = f"sqlite:///{peer_dir}/pffd.db"
    assert run("init", db=db).code == 0
    r = run("user", "add", "alice", "--password-stdin", "--net", ALLOWED_IP, db=db, stdin=PW)
    assert r.code == 0, r.err
    cfg = peer_dir / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\nworkers = 1\n'
        'allowed_users = ["root", "postfix"]\nmax_connections = 20\n'
        f'[policy]\nlisten = "inet:127.0.0.1:{policy_port}"\nmax_connections = 40\n'
        'api_header = "X-API-Key: fd-test-secret-0123456789"\n'
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    cfg.chmod(0o600)  # it holds the policy secret: serve refuses a world-readable one
    with run_server(db, config=cfg, workdir=peer_dir, nofile=NOFILE) as srv:
        srv.wait_log("policy listening")
        yield srv


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, server: ServerProcess) -> Iterator[PostfixInstance]:
    with PostfixInstance(peer_dir / "postfix", server.unix) as pf:
        yield pf


def test_postfix_logs_in_while_idle_holders_fill_the_policy_port(
    postfix: PostfixInstance, server: ServerProcess, policy_port: int
) -> None:
    holders = [hold_tcp(NOBODY, policy_port, PER_HOLDER, 120) for _ in range(HOLDERS)]
    try:
        for h in holders:
            assert h.stdout is not None and h.stdout.readline().strip() == "holding"
        _wait_until_full(policy_port)
        for h in holders:
            assert h.poll() is None, "the holders keep their connections (and reconnect)"
        t0 = time.monotonic()
        got = postfix.login(ALLOWED_IP, "alice", PW)
        took = time.monotonic() - t0
        print(f"\nPostfix login while the policy port is full: {took * 1000:.0f} ms")
        assert got == (235, "2.7.0 Authentication successful")
        assert took < STUCK, f"the login took {took:.1f} s: stuck behind the holders"
        # full, but by its own limit: further connections are closed at once
        server.wait_log("policy connection refused: reason=max_connections")
        log = server.log()
        assert "Too many open files" not in log and "Traceback" not in log, log[-3000:]
    finally:
        for h in holders:
            h.kill()
            h.wait()


def _wait_until_full(port: int, timeout: float = 60) -> None:
    """Until a new policy request gets no answer (refused, closed at once, or left
    unanswered in the kernel's backlog)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(100):
                    return
        except OSError:  # timed out, reset
            return
        time.sleep(0.2)
    raise AssertionError("the holders never filled the policy port")
