"""Stopping ``saslnetauth serve`` while clients keep their connections open.

Postfix's smtpd processes keep their auth connection open between logins.
Since Python 3.12, asyncio's Server.wait_closed() waits for every connection,
so a server that awaited it before closing them never stopped on SIGTERM
(systemd then waits for its timeout and kills it). These tests run under
every Python the suite runs on (Debian 12's 3.11 and Debian 13's 3.13).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.serverproc import AuthClient, b64, free_port, run_server

PW = "s3cret pw"
BIN = Path(sys.executable).parent


def _db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/stop.db"
    assert run("init", db=url).code == 0
    r = run(
        "user", "add", "alice", "--password-stdin", "--net", "127.0.0.2", db=url, stdin=PW + "\n"
    )
    assert r.code == 0, r.err
    return url


def _nothing_received(c: AuthClient) -> bool:
    c.sock.setblocking(False)
    try:
        return not c.sock.recv(65536, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        c.sock.setblocking(True)
        c.sock.settimeout(15)


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_sigterm_answers_in_flight_closes_idle_and_exits(tmp_path: Path, mode: str) -> None:
    metrics_port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        f'[serve]\nmetrics_listen = "inet:127.0.0.1:{metrics_port}"\nworker_mode = "{mode}"\n'
    )
    with run_server(_db(tmp_path), config=cfg, failure_delay=3.0) as srv:
        # a reload first: the engines or workers it replaced are stopped at exit too
        srv.signal(signal.SIGHUP)
        srv.wait_log("configuration reloaded")
        busy, idle, login, late = (srv.connect() for _ in range(4))
        for c in (busy, idle, login, late):
            c.handshake()
        busy.plain(1, "alice", "wrong")  # held by the failure delay
        late.plain(1, "alice", "wrong")
        login.send("AUTH\t1\tLOGIN\tservice=smtp\tnologin\trip=127.0.0.2\n")
        assert login.line() == f"CONT\t1\t{b64('Username:')}"
        metrics = socket.create_connection(("127.0.0.1", metrics_port), timeout=15)
        srv.wait_log("auth fail: user=alice")  # both failures decided, now in their delay
        srv.signal(signal.SIGTERM)
        srv.wait_log("stopping")
        # the idle connection closes at once, before the delayed answers go out
        assert idle.closed(timeout=15)
        assert _nothing_received(busy)
        # a LOGIN exchange in flight is finished
        login.send(f"CONT\t1\t{b64('alice')}\n")
        assert login.line() == f"CONT\t1\t{b64('Password:')}"
        login.send(f"CONT\t1\t{b64(PW)}\n")
        assert login.line() == "OK\t1\tuser=alice"
        assert login.closed(timeout=15)
        # a new request on a draining connection is not taken: its connection closes
        late.plain(2, "alice", PW)
        assert busy.line().startswith("FAIL\t1\tuser=alice")
        assert busy.closed(timeout=15)
        assert late.line().startswith("FAIL\t1\tuser=alice")
        assert late.closed(timeout=15)
        assert late.buf == b""  # no answer to request 2
        assert srv.proc.wait(30) == 0
        metrics.settimeout(15)
        assert metrics.recv(100) == b""  # the idle metrics connection was closed too
        metrics.close()
        log = srv.log()
        assert "request not taken: stopping" in log and "stopped:" in log


def test_sigterm_keeps_the_socket_file_systemd_passed(tmp_path: Path) -> None:
    """Socket activation: the UNIX socket belongs to systemd and must survive a
    restart of the service (asyncio removes socket files itself since 3.13)."""
    db = _db(tmp_path)
    path = tmp_path / "auth-client"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # what systemd holds
    listener.bind(str(path))
    listener.listen(16)
    # become the process systemd starts: the socket on fd 3, LISTEN_PID = our pid
    shim = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS'] = '1'; "
        "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])"
    )
    cmd = [sys.executable, "-c", shim, str(listener.fileno()), str(BIN / "saslnetauth")]
    cmd += ["--database", db, "serve", "--failure-delay", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    for _ in range(2):  # start, stop, start again on the same socket
        log = tmp_path / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, pass_fds=(listener.fileno(),)
            )
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(str(path))
            c = AuthClient(s)
            c.handshake()
            c.plain(1, "alice", PW)
            assert c.line() == "OK\t1\tuser=alice"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
            assert c.closed(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert path.exists(), "the server removed the socket file systemd listens on"
    listener.close()
