"""Faults: the database going away under load, a locked SQLite, vanishing clients."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.passwords import PasswordHasher
from tests.support.clitools import run
from tests.support.net import peer_tmpdir, wait_for
from tests.support.pgcluster import PrivatePostgres
from tests.support.serverproc import AuthClient, ServerProcess, run_server

PW = "fault pw"
HASH = PasswordHasher("SHA512-CRYPT").hash(PW)
CFG = "[serve]\npenalty_max = 0\n[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"


def populate(db: str) -> None:
    assert run("init", db=db).code == 0, "init"
    assert run("user", "add", "alice", "--hash", HASH, "--net", "127.0.0.2", db=db).code == 0


class Load:
    """Clients logging in continuously, each sequentially on its own connection."""

    CASES = (
        ("alice", PW, "127.0.0.2", "OK"),
        ("alice", PW, "127.0.0.3", "FAIL"),
        ("alice", "wrong", "127.0.0.2", "FAIL"),
        ("ghost", PW, "127.0.0.2", "FAIL"),
    )

    def __init__(self, server: ServerProcess, clients: int) -> None:
        self.server = server
        self.stop = threading.Event()
        self.results: list[tuple[float, str, str, str]] = []  # (time, expected, verdict, line)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, n: int) -> None:
        c: AuthClient | None = None
        i = 0
        while not self.stop.is_set():
            try:
                if c is None:
                    c = self.server.connect()
                    c.handshake()
                user, pw, rip, expected = self.CASES[(n + i) % len(self.CASES)]
                i += 1
                c.plain(i, user, pw, rip=rip)
                line = c.line()
                with self.lock:
                    self.results.append((time.monotonic(), expected, line.split("\t")[0], line))
            except (OSError, EOFError) as exc:
                with self.lock:
                    self.errors.append(repr(exc))
                c = None
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def since(self, t0: float) -> list[tuple[float, str, str, str]]:
        with self.lock:
            return [r for r in self.results if r[0] >= t0]

    def wait(
        self,
        predicate: Callable[[list[tuple[float, str, str, str]]], bool],
        t0: float,
        timeout: float,
        what: str,
    ) -> None:
        wait_for(lambda: predicate(self.since(t0)), timeout=timeout, what=what)


@pytest.mark.peer
def test_postgresql_stopped_mid_load_tempfails_and_recovers() -> None:
    with peer_tmpdir("sna-pgfault-") as tmp, PrivatePostgres(tmp) as pg:
        populate(pg.url)
        cfg = tmp / "c.toml"
        cfg.write_text("database_timeout = 2.0\n" + CFG)
        with run_server(pg.url, config=cfg, workdir=tmp) as srv, Load(srv, clients=8) as load:
            t_start = time.monotonic()
            load.wait(lambda rs: sum(r[2] == "OK" for r in rs) >= 20, t_start, 30, "logins")
            pg.stop("immediate")
            t_down = time.monotonic()
            load.wait(lambda rs: sum("temp" in r[3] for r in rs) >= 20, t_down, 30, "tempfails")
            time.sleep(1.5)  # stay down a while
            t_restart = time.monotonic()  # logins may succeed as soon as it accepts again
            pg.start()
            t_up = time.monotonic()
            load.wait(lambda rs: sum(r[2] == "OK" for r in rs) >= 20, t_up, 30, "recovery")
            recovered_after = min(r[0] for r in load.since(t_up) if r[2] == "OK") - t_up
        assert srv.proc.returncode == 0  # stopped cleanly by us, never crashed
        results = load.results
    wrong_ok = [r for r in results if r[2] == "OK" and r[1] != "OK"]
    assert wrong_ok == [], wrong_ok[:5]
    down = [r for r in results if t_down + 0.5 <= r[0] <= t_restart]
    assert down, "no request was answered while the database was down"
    assert all(r[2] == "FAIL" for r in down)
    temp = [r for r in down if "code=temp_fail\ttemp" in r[3]]
    assert len(temp) >= len(down) * 0.9, (len(temp), len(down))
    assert load.errors == [], load.errors[:5]
    print(
        f"recovered {recovered_after:.2f}s after the database returned; "
        f"{len(temp)} tempfails while it was down"
    )


def test_sqlite_locked_by_a_long_admin_transaction(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/lock.db"
    populate(db)
    cfg = tmp_path / "c.toml"
    cfg.write_text("database_timeout = 1.0\n" + CFG)
    with run_server(db, config=cfg) as srv:
        eng = sa.create_engine(db)
        with eng.connect() as admin:
            admin.exec_driver_sql("BEGIN EXCLUSIVE")
            admin.exec_driver_sql("UPDATE users SET enabled = 0 WHERE name = 'alice'")
            c = srv.connect()
            c.handshake()
            replies = []
            for i, (pw, rip) in enumerate(
                [(PW, "127.0.0.2"), ("wrong", "127.0.0.2"), (PW, "127.0.0.3")] * 5, start=1
            ):
                c.plain(i, "alice", pw, rip=rip)
                replies.append((pw, rip, c.line()))
            admin.exec_driver_sql("ROLLBACK")
        eng.dispose()
    for pw, rip, line in replies:
        if pw == PW and rip == "127.0.0.2":
            # the uncommitted disable is invisible (WAL snapshot): OK, or TEMPFAIL if locked
            assert line.startswith("OK\t") or "temp" in line, line
        else:
            assert line.startswith("FAIL\t"), line


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_ten_thousand_vanishing_clients_leak_nothing(tmp_path: Path) -> None:
    import socket

    db = f"sqlite:///{tmp_path}/v.db"
    populate(db)
    assert run("user", "add", "bob", "--hash", "{PLAIN}bob", "--net", "any", db=db).code == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text(CFG)
    with run_server(db, config=cfg, failure_delay=0.2) as srv:
        assert srv.unix
        pid = srv.proc.pid

        def vanish(n: int) -> None:
            for i in range(n):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(srv.unix)
                if i % 3 == 0:
                    s.close()  # gone before the handshake
                    continue
                s.sendall(
                    b"VERSION\t1\t2\nCPID\t1\n"
                    b"AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.9\tresp=AGJvYgBib2I=\n"
                    b"AUTH\t2\tPLAIN\tservice=smtp\trip=127.0.0.9\tresp=AGJvYgB4\n"
                    b"AUTH\t3\tLOGIN\tservice=smtp\n"
                )
                s.close()  # gone mid-request (one OK, one delayed FAIL, one waiting CONT)

        # warm up: pools, caches and the allocator's high-water mark. Measured with 5,000
        # clients per round: 3.11 levels off after the first round (~73 MB), 3.13 after
        # the second (~93 MB), and both stay flat up to 40,000 clients.
        vanish(10_000)
        time.sleep(1)
        base_fds, base_rss = _fds(pid), _rss_kib(pid)
        vanish(10_000)
        wait_for(lambda: _fds(pid) <= base_fds + 2, timeout=30, what="fds back to baseline")
        rss = _rss_kib(pid)
        ok = srv.connect()
        ok.handshake()
        ok.plain(1, "bob", "bob", rip="127.0.0.9")
        assert ok.line() == "OK\t1\tuser=bob"
        ok.close()
        end_fds = _fds(pid)
        assert srv.stop() == 0
        assert "Traceback" not in srv.log()
    grew = rss - base_rss
    print(f"fds {base_fds} -> {end_fds}, RSS {base_rss} KiB -> {rss} KiB (+{grew})")
    # a leak of more than ~1.6 KiB per client would show here
    assert grew < 16 * 1024, f"RSS grew by {grew} KiB over 10,000 vanishing clients"


def test_killed_worker_fails_temporarily_and_is_replaced(tmp_path: Path) -> None:
    import re
    import signal

    db = f"sqlite:///{tmp_path}/w.db"
    populate(db)
    cfg = tmp_path / "c.toml"
    # default-cost ARGON2ID for the unknown users' dummy verification keeps workers busy
    cfg.write_text("[serve]\npenalty_max = 0\nworkers = 2\n")
    with run_server(db, config=cfg) as srv, Load(srv, clients=6) as load:
        t0 = time.monotonic()
        load.wait(lambda rs: len(rs) >= 20, t0, 60, "logins")
        pids = [int(p) for p in re.findall(r"worker started: pid=(\d+)", srv.log())]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        t_kill = time.monotonic()
        srv.wait_log("decision worker died")
        wait_for(
            lambda: len(re.findall(r"worker started: pid=(\d+)", srv.log())) == 3,
            timeout=60,
            what="a replacement worker",
        )
        t_back = time.monotonic()
        # verdicts answered from one second after the replacement on must all be right
        load.wait(lambda rs: sum(r[2] == "OK" for r in rs) >= 5, t_back + 1, 60, "logins after")
        assert srv.stop() == 0
        log = srv.log()
    results = load.results
    assert [r for r in results if r[2] == "OK" and r[1] != "OK"] == []
    assert f"decision worker died: pid={pids[0]}" in log
    # each request the dead worker held is one "auth tempfail" line of the one logger
    lost = int(re.findall(rf"decision worker died: pid={pids[0]} failed_requests=(\d+)", log)[0])
    assert log.count('reason=backend_error error="decision worker died"') == lost
    after = [r for r in results if r[0] > t_back + 1]
    assert after and all(r[2] == r[1] for r in after), after[:5]
    print(f"replacement ready {t_back - t_kill:.2f}s after the kill")


def test_overload_drops_expired_requests_instead_of_working_on_them(tmp_path: Path) -> None:
    """Logins that time out while queued are never hashed, so the next login is not stuck."""
    db = f"sqlite:///{tmp_path}/o.db"
    populate(db)
    # unknown names from a global network could succeed, so they are verified (a dummy
    # hash); from elsewhere they would be refused without one (tests/unit/test_scheduler.py)
    assert run("net", "add", "127.0.0.2", db=db).code == 0
    cfg = tmp_path / "c.toml"
    # default-cost ARGON2ID dummy verifications (~0.1 s each) on one worker, 0.5 s deadline
    cfg.write_text("[serve]\npenalty_max = 0\nworkers = 1\nrequest_timeout = 0.5\n")
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(1, 41):
            c.plain(i, f"ghost{i}", "x", rip="127.0.0.2")
        replies = [c.line() for _ in range(40)]
        temp = [r for r in replies if "code=temp_fail" in r]
        assert temp, "some of 40 slow logins must miss a 0.5 s deadline"
        # The hash a worker had begun before the deadline passed still ends (it cannot
        # be interrupted); give it time. Had the expired logins been kept, the worker
        # would have seconds of hashes ahead of it and the next login would still fail.
        time.sleep(1.0)
        t0 = time.monotonic()
        c.plain(99, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t99\tuser=alice"
        fresh = time.monotonic() - t0
        assert srv.stop() == 0
        log = srv.log()
    decided = log.count("auth fail: user=ghost")
    # the worker decided only what it took before the deadline passed; the rest were dropped
    assert decided + len(temp) <= 40 + 2, (decided, len(temp))
    assert decided < 40
    print(f"{len(temp)} timed out, {decided} decided; next login answered in {fresh:.3f}s")
