"""Issue 21 item 3: under a flood of guesses for one user, a probe for another existing
user and one for an unknown name get the same reply (and neither a TEMPFAIL), whether
the guesses come from outside every network (but inside the user's app password ``any``)
or from a global network. Before: the guesses filled the lane of the network ``any``,
where the existing user's probes waited to their deadline. Replies only: the timing goal
is measured by ``benchmarks/oracle.py --flood``."""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from pathlib import Path

from tests.support.clitools import run
from tests.support.serverproc import AuthClient, ServerProcess, run_server

GLOBAL = "198.18.0.0/15"
FLOODERS = 8
IN_FLIGHT = 8  # per flooding connection: 64 guesses in flight
PROBES = 4  # per name and phase
FAIL_SHAPE = "FAIL\tN\tuser=U\treason=Authentication failed"


def setup_db(tmp_path: Path) -> str:
    """carol and dave with an app password valid from anywhere (the report's users);
    their main passwords and an unknown name only from the global network."""
    db = f"sqlite:///{tmp_path}/n.db"
    assert run("init", db=db).code == 0
    assert run("net", "add", GLOBAL, db=db).code == 0
    for name in ("carol", "dave"):
        assert run("user", "add", name, "--password-stdin", db=db, stdin="main pw\n").code == 0
        r = run("user", "app-password", "add", name, "--label", "any", "--net", "any", db=db)
        assert r.code == 0, r.err
    return db


def addresses(seed: int, base: str, bits: int) -> Callable[[], str]:
    """Random addresses of ``base``/(32 - ``bits``): many client buckets."""
    rng = random.Random(seed)
    a, b, c, d = (int(x) for x in base.split("."))
    start = (a << 24) | (b << 16) | (c << 8) | d

    def draw() -> str:
        v = start + rng.randrange(1, 1 << bits)
        return ".".join(str((v >> s) & 255) for s in (24, 16, 8, 0))

    return draw


class Flood:
    """Closed-loop wrong-password guesses for ``user``: each connection keeps
    IN_FLIGHT requests outstanding, each from a fresh random address."""

    def __init__(self, srv: ServerProcess, user: str, draw: Callable[[], str]) -> None:
        self.srv, self.user, self.draw = srv, user, draw
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered = 0
        self.started = threading.Semaphore(0)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(FLOODERS)]

    def __enter__(self) -> Flood:
        for t in self.threads:
            t.start()
        for _ in self.threads:  # every connection has had a reply: the load is on
            assert self.started.acquire(timeout=60), "flood never answered"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors, self.errors

    def _run(self, n: int) -> None:
        try:
            c = self.srv.connect()
            c.handshake()
            rid = 0
            with self.lock:
                draw = [self.draw() for _ in range(10_000)]
            for rid in range(1, IN_FLIGHT + 1):
                c.plain(rid, self.user, f"guess {n} {rid}", rip=draw[rid % len(draw)])
            outstanding, first = IN_FLIGHT, True
            while outstanding:
                c.line()
                outstanding -= 1
                if first:
                    self.started.release()
                    first = False
                if not self.stop.is_set():
                    rid += 1
                    c.plain(rid, self.user, f"guess {n} {rid}", rip=draw[rid % len(draw)])
                    outstanding += 1
            c.close()
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)
            self.started.release()


def probe(c: AuthClient, names: list[str], draw: Callable[[], str]) -> dict[str, list[str]]:
    """One wrong-password login at a time, alternating the names; masked replies."""
    out: dict[str, list[str]] = {name: [] for name in names}
    for i in range(PROBES):
        for name in names:
            line = c.login_plain(name, f"probe {i}", rip=draw())
            masked = re.sub(r"\tuser=\S+", "\tuser=U", re.sub(r"^(\w+)\t\d+\t", r"\1\tN\t", line))
            assert f"\tuser={name}\t" in line or line.endswith(f"\tuser={name}"), line
            out[name].append(masked)
    return out


def test_a_flood_on_one_user_tells_no_name_apart(tmp_path: Path) -> None:
    db = setup_db(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nworkers = 2\npenalty_max = 0\nuser_penalty = false\n")
    outside = addresses(1, "100.64.0.0", 22)  # 100.64/10: inside no network but `any`
    inside = addresses(2, "198.18.0.0", 17)  # the global network
    got: dict[str, dict[str, list[str]]] = {}
    with run_server(db, config=cfg, failure_delay=1.0, ready_timeout=60) as srv:
        c = srv.connect()
        c.handshake()
        for phase, draw in (("outside", outside), ("global", inside)):
            with Flood(srv, "carol", draw):
                got[phase] = probe(c, ["dave", "ghost"], draw)
        assert srv.stop() == 0
        log = srv.log()
    for phase, replies in got.items():
        for name, lines in replies.items():
            assert lines == [FAIL_SHAPE] * PROBES, (phase, name, lines)
    assert "main pw" not in log and "probe 0" not in log
