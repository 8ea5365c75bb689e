"""Soak test (issue 5.8): hundreds of busy connections for minutes, zero errors allowed.

``saslnetauth serve`` (SQLite, failure delay 0, penalty off so that
failures cost the server the same work as successes and nothing idles)
gets ``--connections`` (default 500) concurrent connections for
``--seconds`` (default 120), each sending PLAIN logins one after another,
in a seeded random mix:

allowed      right password, rip 127.0.0.2 (the user's network)   -> OK
allowed-v6   right password, rip 2001:db8:1::7 (user's /48)       -> OK
denied       right password, rip 127.0.0.3                         -> FAIL
wrong-pw     wrong password, rip 127.0.0.2                         -> FAIL

over ``--users`` users (default 50) with SHA512-CRYPT hashes (5000 rounds,
made by ``doveadm pw``): cheap enough that the server's own overhead, not
only hashing, is exercised. Every request's verdict is checked.

Every 10 s a line shows the interval's throughput and p99 and the
server's RSS (VmRSS) and open fds, of the main process and summed over
its decision worker processes; the end prints the totals, RSS and fds at
start, end and peak, and the server's CPU (main + workers) per login.
Exit status 1 if any error occurred.

Usage::

    .venv/bin/python benchmarks/soak.py [--seconds 120] [--connections 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    DENIED_IP,
    BenchUser,
    CpuMeter,
    banner,
    bench_dir,
    command_line,
    doveadm_pw,
    exit_on_sigterm,
    fd_count,
    machine_summary,
    make_database,
    ms,
    percentile,
    raise_nofile,
    rate,
    rss_kib,
    saslnetauth_server,
    table,
    thread_count,
)
from benchmarks.loadgen import LoadState, Login, print_summary, run_load

V6_NET = "2001:db8:1::/48"
V6_RIP = "2001:db8:1::7"


SAMPLE_COLUMNS = [
    "t s",
    "done",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "RSS MiB",
    "RSS all",
    "fds",
    "fds all",
    "procs",
]
SNAPSHOT_ROWS = {
    "rss": "RSS MiB, main process",
    "rss_all": "RSS MiB, main + workers",
    "fds": "open fds, main process",
    "fds_all": "open fds, main + workers",
    "threads": "threads, main process",
    "procs": "processes",
}


def snapshot(pids: list[int]) -> dict[str, int]:
    """RSS, fds, threads of the main process (first pid) and summed over all."""
    main, live = pids[0], []
    for pid in pids:
        try:
            live.append((rss_kib(pid), fd_count(pid)))
        except OSError:  # a worker that just exited
            continue
    return {
        "rss": rss_kib(main),
        "rss_all": sum(r for r, _ in live),
        "fds": fd_count(main),
        "fds_all": sum(f for _, f in live),
        "threads": thread_count(main),
        "procs": len(live),
    }


def make_logins(users: list[BenchUser]) -> list[Login]:
    logins = []
    for u in users:
        logins += [
            Login(u.name, u.password, ALLOWED_IP, True, label="allowed"),
            Login(u.name, u.password, V6_RIP, True, label="allowed-v6"),
            Login(u.name, u.password, DENIED_IP, False, label="denied"),
            Login(u.name, u.password + "x", ALLOWED_IP, False, label="wrong-pw"),
        ]
    return logins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    limit = raise_nofile(args.connections + 512)
    banner(f"Soak: {args.connections} connections for {args.seconds:.0f} s")
    print(f"machine: {machine_summary()}; client RLIMIT_NOFILE {limit}")
    with bench_dir("sna-soak-") as tmp:
        # one real doveadm hash per user would take a while; a few distinct ones cycle
        pool = [doveadm_pw("SHA512-CRYPT", f"soak-pw-{i}") for i in range(5)]
        users = [
            BenchUser(f"soak{i:03d}", f"soak-pw-{i % 5}", pool[i % 5], (ALLOWED_IP, V6_NET))
            for i in range(args.users)
        ]
        db = make_database(tmp, users)
        logins = make_logins(users)
        # every load connection comes from this one user: give it all of them
        serve = {
            "penalty_max": 0,
            "max_connections": max(1000, args.connections + 16),
            "max_connections_per_peer": max(1000, args.connections + 16),
        }
        with saslnetauth_server(tmp, db, failure_delay=0.0, serve=serve) as sna:
            pid = sna.pid
            print(f"server: {' '.join(sna.argv[1:])} (pid {pid})")
            print(
                f"users: {args.users} (SHA512-CRYPT, 5000 rounds), logins: allowed, allowed-v6, "
                "denied, wrong-pw in a seeded random mix"
            )
            print(f"ready: {sna.ready_line()}")
            start = snapshot(sna.pids())
            samples: list[list[object]] = []
            meter = CpuMeter(sna.pids)
            peak = dict(start)

            async def monitor(state: LoadState) -> None:
                t0 = time.monotonic()
                seen = 0
                while True:
                    await asyncio.sleep(args.interval)
                    lat = state.latencies[seen:]
                    seen += len(lat)
                    s = sorted(lat)
                    snap = snapshot(sna.pids())
                    for key, value in snap.items():
                        peak[key] = max(peak[key], value)
                    samples.append(
                        [
                            f"{time.monotonic() - t0:.0f}",
                            len(lat),
                            rate(len(lat) / args.interval),
                            ms(percentile(s, 50)),
                            ms(percentile(s, 99)),
                            sum(state.errors.values()),
                            f"{snap['rss'] / 1024:.1f}",
                            f"{snap['rss_all'] / 1024:.1f}",
                            snap["fds"],
                            snap["fds_all"],
                            snap["procs"],
                        ]
                    )
                    print("  " + "  ".join(str(c) for c in samples[-1]), flush=True)

            print("  " + "  ".join(SAMPLE_COLUMNS))
            result = asyncio.run(
                run_load(
                    sna.target,
                    logins,
                    connections=args.connections,
                    seconds=args.seconds,
                    timeout=60.0,
                    shuffle_seed=args.seed,
                    monitor=monitor,
                )
            )
            _, cpu, _, others = meter.stop()
            end = snapshot(sna.pids())
            time.sleep(1.0)
            idle = snapshot(sna.pids())
            alive = sna.proc.poll() is None
            deaths = sna.log().count("decision worker died")
    banner("Results")
    print(table(SAMPLE_COLUMNS, samples))
    print()
    print_summary(result)
    print()
    rows = []
    for key, label in SNAPSHOT_ROWS.items():
        values = [start[key], end[key], idle[key], peak[key]]
        if key.startswith("rss"):
            rows.append([label, *(f"{v / 1024:.1f}" for v in values)])
        else:
            rows.append([label, *values])
    print(table(["server", "start", "end of run", "1 s later", "peak (10 s samples)"], rows))
    print(
        f"server CPU (main + workers) {cpu:.1f} s over {result.elapsed:.1f} s "
        f"({cpu / result.elapsed * 100:.0f}% of one core); "
        f"{cpu / max(1, result.completed) * 1000:.2f} ms per login; "
        f"others on the machine {others / result.elapsed * 100:.0f}% of one core"
    )
    print(f"server alive at the end: {alive}; decision workers died: {deaths}")
    print(f"verdicts: {dict(result.verdicts)}")
    print(f"errors: {result.error_count} (must be 0)")
    print(f"reproduce: {command_line()}")
    return 1 if result.error_count or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
