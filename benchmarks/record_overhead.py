"""What the verdict record ([report] record) costs logins at benchmark load.

`saslnetauth serve` keeps a record of its verdicts for `saslnetauth report`.
This starts the server with the record on and off, alternately (on, off,
on, off, ...), runs the same load against each and prints throughput and
p99 with the overhead in percent (target: at most 5%), and the server's CPU
time per login (main process and workers), which a noisy machine disturbs
less than throughput; the spread of the throughput runs shows that noise.

    .venv/bin/python benchmarks/record_overhead.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    BenchUser,
    banner,
    bench_dir,
    command_line,
    cpu_seconds,
    doveadm_pw,
    machine_summary,
    make_database,
    saslnetauth_server,
    table,
)
from benchmarks.loadgen import Login, run_load

WORKLOADS = {"PLAIN": ("{PLAIN}rec-pw", 20), "SHA512-CRYPT": (None, 20)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    banner("Verdict record overhead ([report] record on vs off)")
    print(machine_summary())
    rows = []
    worst = 0.0
    with bench_dir("sna-record-") as tmp:
        for scheme, (plain_hash, conns) in WORKLOADS.items():
            stored = plain_hash or doveadm_pw("SHA512-CRYPT", "rec-pw")
            db = make_database(tmp, [BenchUser("rec", "rec-pw", stored)], name=f"{scheme}.db")
            logins = [
                Login("rec", "rec-pw", "127.0.0.2", True),
                Login("rec", "rec-pw", "127.0.0.3", False),
            ]
            runs: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
            for _ in range(args.rounds):
                for record in (True, False):
                    extra = "" if record else "\n[report]\nrecord = false\n"
                    with saslnetauth_server(tmp, db, extra_config=extra, name=f"s-{record}") as srv:
                        pids = srv.pids()
                        cpu0 = cpu_seconds(pids)
                        res = asyncio.run(
                            run_load(srv.target, logins, connections=conns, seconds=args.seconds)
                        )
                        cpu = (cpu_seconds(pids) - cpu0) / max(1, len(res.latencies))
                        if res.error_count:
                            print(f"errors: {res.errors}")
                            return 1
                        runs[record].append((res.throughput, res.p99, cpu))
            on = statistics.median(r[0] for r in runs[True])
            off = statistics.median(r[0] for r in runs[False])
            p99_on = statistics.median(r[1] for r in runs[True])
            p99_off = statistics.median(r[1] for r in runs[False])
            cpu_on = statistics.median(r[2] for r in runs[True])
            cpu_off = statistics.median(r[2] for r in runs[False])
            overhead = (off - on) / off * 100
            worst = max(worst, overhead)
            spread = " / ".join(
                f"{min(r[0] for r in runs[k]):,.0f}-{max(r[0] for r in runs[k]):,.0f}"
                for k in (False, True)
            )
            rows.append(
                [
                    scheme,
                    conns,
                    f"{off:,.0f}",
                    f"{on:,.0f}",
                    f"{overhead:+.1f}%",
                    spread,
                    f"{p99_off * 1000:.2f}",
                    f"{p99_on * 1000:.2f}",
                    f"{cpu_off * 1000:.3f}",
                    f"{cpu_on * 1000:.3f}",
                    f"{(cpu_on - cpu_off) / cpu_off * 100:+.1f}%",
                ]
            )
    print(
        table(
            [
                "workload",
                "conns",
                "off req/s",
                "on req/s",
                "cost",
                "range off / on",
                "p99 off ms",
                "p99 on ms",
                "CPU ms/login off",
                "on",
                "CPU cost",
            ],
            rows,
        )
    )
    print(f"medians of {args.rounds} alternating runs of {args.seconds:g} s each")
    print(f"target record costs <= 5%: {'MET' if worst <= 5 else 'NOT MET'} (worst {worst:.1f}%)")
    print(f"reproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
