"""Issue 24: Postfix policy decisions per second, saslnetauth vs Debian's peers.

Targets (each started privately on a free loopback TCP port, see
``sending_peers.py``): ``saslnetauth serve`` with ``[sending] listen``
(embedded state; Redis at 127.0.0.1:6379 under a private key prefix), Debian's
``policyd-rate-limit`` and ``postfwd``. Three measurements per target:

1. closed loop: 1, 20 and 200 Postfix-like clients (one connection each, one
   message = one RCPT + one END-OF-MESSAGE request) over many distinct users
   (10,000, each in saslnetauth's database, as users who logged in through it are)
   with practically no limit: decisions/s, p50, p99, and saslnetauth's
   throughput over the faster peer's (target >= 2x);
2. paced: 1,000 decisions/s over 50 connections, p99 from the scheduled time
   (target < 5 ms);
3. race: 20 clients send 3 x LIMIT messages for one user whose limit is LIMIT
   messages per hour; exactly LIMIT may pass (saslnetauth with Redis also with
   two servers sharing it, the clients split between them).

An installed saslnetauth without ``[sending]`` gets a "skipped" row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import policyload, sending_peers
from benchmarks.common import (
    banner,
    bench_dir,
    command_line,
    exit_on_sigterm,
    machine_summary,
    ms,
    raise_nofile,
    rate,
    table,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
USERS = [f"user{i:05d}" for i in range(10_000)]
P99_TARGET = 0.005
RATIO_TARGET = 2.0

Factory = Callable[[Path], "contextlib.AbstractContextManager[sending_peers.Target]"]


def redis_up() -> bool:
    if shutil.which("redis-cli") is None:
        return False
    res = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() == "PONG"


def targets(
    limit: int, only: set[str] | None, db: str | None
) -> tuple[list[tuple[str, Factory]], list[str]]:
    """(name, factory) of what can run here, and the rows of what cannot."""
    out: list[tuple[str, Factory]] = []
    skipped: list[str] = []
    if db is not None:
        out.append(("embedded", lambda d: sending_peers.saslnetauth(d, db)))
        if redis_up():
            out.append(("redis", lambda d: sending_peers.saslnetauth(d, db, REDIS_URL)))
        else:
            skipped.append("saslnetauth (redis): no Redis answers on 127.0.0.1:6379: skipped")
    elif not sending_peers.saslnetauth_has_sending():
        skipped.append("saslnetauth has no [sending]: skipped")
    for name, cmd, factory in (
        ("policyd-rate-limit", "policyd-rate-limit", sending_peers.policyd_rate_limit),
        ("postfwd", "postfwd2", sending_peers.postfwd),
    ):
        if shutil.which(cmd) is None:
            skipped.append(f"{name}: not installed (apt-get install {name}): skipped")
        else:
            out.append((name, functools.partial(factory, limit=limit)))
    if only:
        out = [t for t in out if t[0] in only]
    return out, skipped


@contextlib.contextmanager
def started(factory: Factory) -> Iterator[sending_peers.Target]:
    with bench_dir("sna-sending-") as tmp, factory(tmp) as target:
        yield target


def measure(
    factory: Factory, conns: list[int], seconds: float, paced_seconds: float, limit: int
) -> dict[str, Any]:
    """All three measurements on one freshly started target."""
    res: dict[str, Any] = {"loops": {}}
    with started(factory) as target:
        res["name"], res["note"] = target.name, target.note
        host, port = "127.0.0.1", target.ports[0]
        for n in conns:
            stats = asyncio.run(policyload.closed_loop(host, port, n, seconds, USERS))
            res["loops"][n] = stats
            print(f"  {target.name}: {n} clients done", flush=True)
        res["paced"] = asyncio.run(policyload.paced(host, port, 1000, paced_seconds, USERS))
        res["race"] = asyncio.run(policyload.race(host, port, 20, sending_peers.RACER, 3 * limit))
    return res


def race_two_servers(limit: int, db: str | None) -> int | None:
    if db is None or not redis_up():
        return None

    def factory(d: Path) -> Any:
        return sending_peers.saslnetauth(d, db, REDIS_URL, servers=2)

    with started(factory) as target:
        pairs = [("127.0.0.1", p) for p in target.ports]
        return asyncio.run(policyload.race_split(pairs, 20, sending_peers.RACER, 3 * limit))


def print_tables(
    results: list[dict[str, Any]], conns: list[int], limit: int, two: int | None
) -> None:
    peers = [r for r in results if not r["name"].startswith("saslnetauth")]
    rows = []
    for r in results:
        for n in conns:
            st = r["loops"][n]
            s = st.summary()
            ratio = "-"
            if r["name"].startswith("saslnetauth") and peers:
                best = max(p["loops"][n].summary()["per_second"] for p in peers)
                ratio = f"{s['per_second'] / best:.2f}x" if best else "-"
            bad = st.errors + sum(
                v for k, v in st.actions.items() if k not in policyload.PASS_ACTIONS
            )
            rows.append(
                [r["name"], n, rate(s["per_second"]), ms(s["p50"]), ms(s["p99"]), ms(s["max"]),
                 int(s["decisions"]), bad, st.reconnects, ratio]
            )  # fmt: skip
    print(table(
        ["target", "clients", "decisions/s", "p50 ms", "p99 ms", "max ms", "decisions",
         "not passed", "reconnects", "vs faster peer"], rows))  # fmt: skip
    print(f"vs faster peer: saslnetauth's decisions/s over the faster peer's at the same "
          f"concurrency; target >= {RATIO_TARGET:.0f}x")  # fmt: skip
    for r in results:
        for n in conns:
            other = {
                k: v for k, v in r["loops"][n].actions.items() if k not in policyload.PASS_ACTIONS
            }
            if other:
                print(f"  not passed, {r['name']} at {n} clients: {other} (action code: count)")
    print()
    rows = []
    for r in results:
        st = r["paced"]
        s = st.summary()
        met = "MET" if s["p99"] < P99_TARGET and not st.errors else "NOT MET"
        rows.append(
            [
                r["name"],
                rate(s["per_second"]),
                ms(s["p50"]),
                ms(s["p99"]),
                ms(s["max"]),
                st.errors,
                met,
            ]
        )
    print(table(["target (paced 1,000/s, 50 conns)", "decisions/s", "p50 ms", "p99 ms", "max ms",
                 "errors", "p99 < 5 ms"], rows))  # fmt: skip
    print()
    rows = [[r["name"], limit, 3 * limit, r["race"], "MET" if r["race"] == limit else "NOT MET"]
            for r in results]  # fmt: skip
    if two is not None:
        rows.append(["saslnetauth (redis, 2 servers)", limit, 3 * limit, two,
                     "MET" if two == limit else "NOT MET"])  # fmt: skip
    print(table(["race: 20 clients, one user", "limit", "sent", "passed", "exactly limit"], rows))


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (under a minute)")
    ap.add_argument("--seconds", type=float, help="seconds per closed-loop cell (6; quick 1.5)")
    ap.add_argument("--conns", default="1,20,200", help="concurrencies (1,20,200)")
    ap.add_argument("--limit", type=int, default=50, help="messages per hour in the race (50)")
    ap.add_argument("--targets", help="subset of: embedded,redis,policyd-rate-limit,postfwd")
    args = ap.parse_args()
    seconds = args.seconds or (1.5 if args.quick else 6.0)
    paced_seconds = 2.0 if args.quick else 6.0
    conns = [int(c) for c in args.conns.split(",")]
    raise_nofile()
    banner(
        "Sending limits: Postfix policy decisions, saslnetauth vs policyd-rate-limit and postfwd"
    )
    print(machine_summary())
    print("one message = RCPT + END-OF-MESSAGE (2 decisions); 10,000 users; TCP on loopback;")
    print(f"closed loop {seconds:g} s per cell, paced {paced_seconds:g} s; other processes share "
          "the machine, so compare within a run")  # fmt: skip
    only = set(args.targets.split(",")) if args.targets else None
    with bench_dir("sna-sending-db-") as dbdir:
        db = None
        if sending_peers.saslnetauth_has_sending() and (not only or only & {"embedded", "redis"}):
            db = sending_peers.saslnetauth_database(dbdir, args.limit, USERS)
        found, skipped = targets(args.limit, only, db)
        results = []
        for name, factory in found:
            try:
                results.append(measure(factory, conns, seconds, paced_seconds, args.limit))
            except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                skipped.append(f"{name}: FAILED: {exc!r}")
        two = race_two_servers(args.limit, db) if not only or "redis" in only else None
    print()
    for r in results:
        if r["note"]:
            print(f"{r['name']}: {r['note']}")
    print_tables(results, conns, args.limit, two)
    for row in skipped:
        print(row)
    print(f"reproduce: {command_line()}")
    return 1 if any("FAILED" in row for row in skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
