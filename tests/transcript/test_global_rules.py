"""Through the real `saslnetauth serve` with 2 worker processes: no worker serves a stale
global network (issue 11 item 1). Each worker keeps its own cached copy; every one must
check the database before using a copy older than global_cache_seconds. With
worker_mode = "threads" the threads share one copy."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.serverproc import ServerProcess, run_server

PW = "s3cret pw"
CACHE = 0.3
CONFIG = """
global_cache_seconds = {cache}
[passwords]
argon2_memory_kib = 1024
argon2_time_cost = 1
[serve]
workers = 2
worker_mode = "{mode}"
penalty_max = 0
"""


@pytest.fixture
def db(db_url: str) -> str:
    assert run("init", db=db_url).code == 0
    r = run("user", "add", "bob", "--password-stdin", db=db_url, stdin=PW + "\n")
    assert r.code == 0, r.err
    r = run("net", "add", "192.0.2.0/24", db=db_url)
    assert r.code == 0, r.err
    return db_url


def _burst(srv: ServerProcess, rip: str, n: int) -> list[str]:
    """``n`` logins at once on ``n`` connections (so both workers take some)."""
    replies: list[str] = [""] * n
    clients = [srv.connect() for _ in range(n)]
    for c in clients:
        c.handshake()
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        replies[i] = clients[i].login_plain("bob", PW, rip=rip).split("\t")[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return replies


def _deciding_pids(log: str, verdict: str, rip: str) -> set[str]:
    """The worker processes that logged ``auth <verdict>`` for bob from ``rip``."""
    pattern = (
        rf"saslnetauth\[(\d+)\]: \w+ auth {verdict}: user=bob service=smtp rip={re.escape(rip)}\b"
    )
    return set(re.findall(pattern, log))


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_removed_global_network_refused_by_every_worker_at_once(
    db: str, tmp_path: Path, mode: str
) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(CONFIG.format(cache=CACHE, mode=mode))
    with run_server(db, config=cfg) as srv:
        assert _burst(srv, "192.0.2.7", 8) == ["OK"] * 8
        assert run("net", "del", "192.0.2.0/24", db=db).code == 0
        time.sleep(CACHE * 2)
        # every login after the change fails, until both workers have answered some
        for _ in range(10):
            assert _burst(srv, "192.0.2.7", 8) == ["FAIL"] * 8
            if mode == "threads" or len(_deciding_pids(srv.log(), "fail", "192.0.2.7")) >= 2:
                break
        assert len(_deciding_pids(srv.log(), "fail", "192.0.2.7")) == (
            2 if mode == "processes" else 1
        )
        assert run("net", "add", "198.51.100.0/24", db=db).code == 0
        time.sleep(CACHE * 2)
        assert _burst(srv, "198.51.100.7", 8) == ["OK"] * 8
        assert _burst(srv, "192.0.2.7", 4) == ["FAIL"] * 4
        assert len(_deciding_pids(srv.log(), "ok", "192.0.2.7")) >= 1
        assert "Traceback" not in srv.log()
