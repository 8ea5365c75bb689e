"""saslnetauth serve against Dovecot 2.3's own auth server, side by side, in one run.

Both servers get the same users with the SAME hashes (made by ``doveadm
pw``) and the same allowed network (127.0.0.2):

(a) a private Dovecot 2.3 (tests/support DovecotInstance): passwd-file
    passdb, ``allow_nets=127.0.0.2`` per user, ``auth_failure_delay = 0``,
    auth penalty off (harness), plus :data:`benchmarks.common.DOVECOT_TUNING`;
(b) ``saslnetauth serve`` on SQLite, users added with ``saslnetauth user
    add NAME --hash '{SCHEME}...' --net 127.0.0.2``, ``--failure-delay 0``,
    ``[serve] penalty_max = 0``.

Each cell (scheme x allowed/denied x connections) runs the identical
workload against both, alternating D, S, D, S (and S, D, S, D in the next
cell) so that drift in the machine's speed cancels. "allowed" logins come
from rip=127.0.0.2 with the right password (expect OK); "denied" ones from
rip=127.0.0.3 with the right password (expect FAIL: network).

Columns: req/s over the run; p50/p99/max latency; errors (unexpected
verdicts, tempfails, protocol errors, timeouts); srv ms/login = CPU time
of the server's processes per login (all threads, all Dovecot processes);
client% = the load generator's own CPU (near 100% means the client, not
the server, was the limit); others% = CPU used meanwhile by unrelated
processes on the machine (a disturbed run shows here). S/D columns are
saslnetauth divided by Dovecot.

Usage::

    .venv/bin/python benchmarks/vs_dovecot.py            # ~6-8 minutes
    .venv/bin/python benchmarks/vs_dovecot.py --quick    # ~1-2 minutes
    .venv/bin/python benchmarks/vs_dovecot.py --schemes PLAIN,ARGON2ID --conns 1,20

``APP-PASSWORD``: an app password's token (saslnetauth, one keyed SHA-256) against
the same token as Dovecot's PLAIN password, the closest equivalent; ``--cores``:
the hash-bound limit (cores x single-core hash rate) and each server's
throughput as a fraction of it (both in benchmarks/hashbound.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    DENIED_IP,
    DOVECOT_TUNING,
    BenchUser,
    CpuMeter,
    banner,
    bench_dir,
    command_line,
    doveadm_pw,
    dovecot_passwd_line,
    dovecot_pids,
    dovecot_process_names,
    exit_on_sigterm,
    machine_summary,
    make_database,
    ms,
    percentile,
    raise_nofile,
    rate,
    saslnetauth_server,
    table,
)
from benchmarks.hashbound import APP, add_app_password, bound_rows, single_core_rates
from benchmarks.loadgen import LoadResult, Login, run_load

#: workload name -> (doveadm scheme, rounds/cost or None for Dovecot's default)
SCHEMES: dict[str, tuple[str, int | None]] = {
    "PLAIN": ("PLAIN", None),
    "SHA512-CRYPT": ("SHA512-CRYPT", None),
    "BLF-CRYPT-5": ("BLF-CRYPT", 5),
    "BLF-CRYPT-10": ("BLF-CRYPT", 10),
    "ARGON2ID": ("ARGON2ID", None),
    # a slow main password and an app password to log in with (benchmarks/hashbound.py)
    APP: ("SHA512-CRYPT", None),
}
CONNS = (1, 20, 200)
KINDS = ("allowed", "denied")

#: Requests per run (each server, each round), by scheme, kind and connections 1/20/200.
#: Dovecot 2.3.19 answers every FAIL on a 500 ms timer tick even with
#: auth_failure_delay = 0, so "denied" runs on one connection stay short.
COUNTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "PLAIN": {"allowed": (1500, 3000, 3000), "denied": (6, 100, 1000)},
    APP: {"allowed": (1500, 3000, 3000), "denied": (6, 100, 1000)},
    "SHA512-CRYPT": {"allowed": (300, 800, 800), "denied": (6, 100, 800)},
    "BLF-CRYPT-5": {"allowed": (300, 800, 800), "denied": (6, 100, 800)},
    "BLF-CRYPT-10": {"allowed": (16, 40, 200), "denied": (6, 40, 200)},
    "ARGON2ID": {"allowed": (8, 40, 200), "denied": (6, 40, 200)},
}
#: Cells too slow for two rounds (200 connections x one slow hash each): one round,
#: the order of the two servers still alternates from cell to cell.
ONE_ROUND = {("BLF-CRYPT-10", 200), ("ARGON2ID", 200)}
#: --quick: per-run requests divided by this (at least one per connection), one round,
#: and these cells left out.
QUICK_DIVISOR = 4
QUICK_SKIP = {("BLF-CRYPT-10", 200), ("ARGON2ID", 200)}

TIMEOUT = 180.0


@dataclass
class Cell:
    scheme: str
    kind: str
    conns: int
    requests: int
    rounds: int


@dataclass
class Agg:
    """Several runs of one cell against one server, merged."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    wall: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    others_cpu: float = 0.0
    runs: int = 0

    def add(self, res: LoadResult, wall: float, srv: float, own: float, others: float) -> None:
        self.latencies += res.latencies
        self.elapsed += res.elapsed
        self.wall += wall
        self.errors += res.error_count
        self.error_samples += res.error_samples[: 3 - len(self.error_samples)]
        self.server_cpu += srv
        self.client_cpu += own
        self.others_cpu += others
        self.runs += 1

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)

    @property
    def cpu_per_login(self) -> float:
        return self.server_cpu / len(self.latencies) if self.latencies else float("nan")


def plan(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for scheme in args.schemes:
        for kind in args.kinds:
            for conns in args.conns:
                base = COUNTS[scheme][kind][CONNS.index(conns)] if conns in CONNS else 100
                rounds = 1 if (scheme, conns) in ONE_ROUND else args.rounds
                if args.quick:
                    if (scheme, conns) in QUICK_SKIP:
                        continue
                    base = max(2, base // QUICK_DIVISOR)
                    rounds = 1
                n = max(conns, int(base * args.scale))
                cells.append(Cell(scheme, kind, conns, n, rounds))
    return cells


def make_users() -> dict[str, BenchUser]:
    users = {}
    for name, (scheme, cost) in SCHEMES.items():
        password = f"pw-{name.lower()}-{secrets.token_hex(4)}"
        users[name] = BenchUser(
            name=f"bench-{name.lower()}",
            password=password,
            hash=doveadm_pw(scheme, password, cost),
            nets=(ALLOWED_IP,),
        )
    return users


def logins_for(user: BenchUser, kind: str) -> list[Login]:
    if kind == "allowed":
        return [Login(user.name, user.password, ALLOWED_IP, True, label="allowed")]
    return [Login(user.name, user.password, DENIED_IP, False, label="denied")]


def run_one(
    target: str, pids: Callable[[], list[int]], logins: list[Login], cell: Cell, agg: Agg
) -> None:
    meter = CpuMeter(pids)
    res = asyncio.run(
        run_load(
            target,
            logins,
            connections=cell.conns,
            requests=cell.requests,
            timeout=TIMEOUT,
        )
    )
    agg.add(res, *meter.stop())


def warm_up(target: str, user: BenchUser) -> None:
    asyncio.run(
        run_load(target, logins_for(user, "allowed"), connections=1, requests=2, timeout=TIMEOUT)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 1-2 minute version")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated subset")
    ap.add_argument("--kinds", default=",".join(KINDS), help="allowed,denied or one of them")
    ap.add_argument("--conns", default=",".join(map(str, CONNS)), help="e.g. 1,20,200")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs per server and cell")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="cores for the hash-bound limit: cores x single-core hash rate (default: all)",
    )
    args = ap.parse_args(argv)
    args.schemes = [s.strip().upper() for s in args.schemes.split(",") if s.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.conns = [int(c) for c in args.conns.split(",") if c.strip()]
    for s in args.schemes:
        if s not in SCHEMES:
            ap.error(f"unknown scheme {s}; choose from {', '.join(SCHEMES)}")
    exit_on_sigterm()
    raise_nofile(max(args.conns) * 2 + 256)
    cells = plan(args)

    banner("saslnetauth serve vs Dovecot 2.3 auth (passwd-file), same users and hashes")
    print(f"machine: {machine_summary()}")
    print("workloads (requests per run and server; runs alternate D,S,D,S / S,D,S,D):")
    print(
        table(
            ["scheme", "kind", "conns", "req/run", "runs/server"],
            [[c.scheme, c.kind, c.conns, c.requests, c.rounds] for c in cells],
        )
    )
    t_start = time.monotonic()
    results: dict[tuple[str, str, int], dict[str, Agg]] = {}
    with bench_dir("sna-vsdc-") as tmp:
        users = make_users()
        print(
            "hashes (doveadm pw): "
            + "; ".join(f"{k}: {u.hash[:30]}..." for k, u in users.items() if u.hash)
        )
        db = make_database(tmp, list(users.values()))
        users[APP] = add_app_password(db, users[APP])
        rates = single_core_rates({k: users[k] for k in args.schemes})
        print(
            "single-core hash rates (this process, one thread): "
            + "; ".join(f"{k}: {v:,.0f}/s" for k, v in rates.items())
        )
        from tests.support import DovecotInstance

        dovecot = DovecotInstance(
            tmp / "dovecot",
            passwd=[dovecot_passwd_line(u) for u in users.values()],
            extra_config=DOVECOT_TUNING,
        )
        with (
            dovecot,
            saslnetauth_server(tmp, db, failure_delay=0.0, serve={"penalty_max": 0}) as sna,
        ):
            d_target = f"unix:{dovecot.auth_socket}"
            master = dovecot._master_pid
            servers: dict[str, tuple[str, Callable[[], list[int]]]] = {
                "dovecot": (d_target, lambda: dovecot_pids(master)),
                "saslnetauth": (sna.target, sna.pids),
            }
            print(f"saslnetauth: {' '.join(sna.argv[1:])}")
            print(f"  ready: {sna.ready_line()}")
            print(f"  config: {sna.config_path.read_text().strip().replace(chr(10), '; ')}")
            print(f"dovecot: {dovecot.config_file} (harness config + tuning below)")
            print("  " + DOVECOT_TUNING.strip().replace("\n", "\n  "))
            warmed: set[str] = set()
            seen_procs: set[str] = set()
            for i, cell in enumerate(cells):
                user = users[cell.scheme]
                if cell.scheme not in warmed:
                    for target, _ in servers.values():
                        warm_up(target, user)
                    warmed.add(cell.scheme)
                order = ["dovecot", "saslnetauth"] if i % 2 == 0 else ["saslnetauth", "dovecot"]
                aggs = {name: Agg() for name in servers}
                logins = logins_for(user, cell.kind)
                for _ in range(cell.rounds):
                    for name in order:
                        target, pids = servers[name]
                        run_one(target, pids, logins, cell, aggs[name])
                    seen_procs.update(dovecot_process_names(dovecot._master_pid))
                results[(cell.scheme, cell.kind, cell.conns)] = aggs
                print(
                    f"  done {cell.scheme} {cell.kind} c={cell.conns}: "
                    f"D {rate(aggs['dovecot'].throughput)}/s, "
                    f"S {rate(aggs['saslnetauth'].throughput)}/s "
                    f"[{time.monotonic() - t_start:.0f}s]",
                    flush=True,
                )
            sna_log_lines = sna.log().count("\n")
    elapsed = time.monotonic() - t_start

    rows = []
    for cell in cells:
        aggs = results[(cell.scheme, cell.kind, cell.conns)]
        d, s = aggs["dovecot"], aggs["saslnetauth"]
        for name, agg in (("dovecot", d), ("saslnetauth", s)):
            n = len(agg.latencies)
            ratio = ["", "", ""]
            if name == "saslnetauth":
                ratio = [
                    _ratio(s.throughput, d.throughput),
                    _ratio(s.pct(50), d.pct(50)),
                    _ratio(s.cpu_per_login, d.cpu_per_login),
                ]
            rows.append(
                [
                    f"{cell.scheme} {cell.kind}" if name == "dovecot" else "",
                    cell.conns if name == "dovecot" else "",
                    n,
                    name,
                    rate(agg.throughput),
                    ms(agg.pct(50)),
                    ms(agg.pct(99)),
                    ms(agg.pct(100)),
                    agg.errors,
                    f"{agg.cpu_per_login * 1000:.3f}",
                    f"{agg.client_cpu / agg.wall * 100:.0f}" if agg.wall else "-",
                    f"{agg.others_cpu / agg.wall * 100:.0f}" if agg.wall else "-",
                    *ratio,
                ]
            )
    banner("Results")
    print(
        table(
            [
                "workload",
                "conns",
                "reqs",
                "server",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "srv ms/login",
                "client%",
                "others%",
                "S/D req/s",
                "S/D p50",
                "S/D cpu",
            ],
            rows,
        )
    )
    banner(f"Against the hash-bound limit (--cores {args.cores} x single-core hash rate)")
    bound = []
    for c in cells:
        got = results[(c.scheme, c.kind, c.conns)]
        bound.append(
            (c.scheme, c.kind, c.conns, got["dovecot"].throughput, got["saslnetauth"].throughput)
        )
    print(bound_rows(bound, rates, args.cores))
    errors = [
        f"{k}: {name}: {sample}"
        for k, aggs in results.items()
        for name, agg in aggs.items()
        for sample in agg.error_samples
    ]
    for line in errors[:10]:
        print(f"error sample: {line}")
    print()
    print(f"Dovecot processes seen during the runs: {', '.join(sorted(seen_procs))}")
    print(
        "Note: passwd-file is not a blocking passdb, so Dovecot 2.3 verifies every hash in its "
        "single auth process (service auth process_limit must be 1); auth-worker processes "
        "are only used by blocking passdbs (sql, ldap, pam...)."
    )
    print(
        "Note: Dovecot 2.3.19 sends every FAIL from a 500 ms timer even with "
        "auth_failure_delay = 0 (AUTH_FAILURE_DELAY_CHECK_MSECS): its 'denied' latencies and "
        "throughput measure that timer; compare srv ms/login for the work done."
    )
    print(f"saslnetauth log lines written: {sna_log_lines}")
    print(f"total time {elapsed:.0f} s")
    print(f"reproduce: {command_line()}")
    if args.json:
        out = {
            f"{k[0]} {k[1]} c={k[2]}": {
                name: {
                    "requests": len(a.latencies),
                    "throughput": a.throughput,
                    "p50": a.pct(50),
                    "p99": a.pct(99),
                    "max": a.pct(100),
                    "errors": a.errors,
                    "server_cpu_per_login": a.cpu_per_login,
                }
                for name, a in aggs.items()
            }
            for k, aggs in results.items()
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    total_errors = sum(a.errors for aggs in results.values() for a in aggs.values())
    return 1 if total_errors else 0


def _ratio(a: float, b: float) -> str:
    if not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


if __name__ == "__main__":
    sys.exit(main())
