"""100,000 global networks: build time of the RuleSet and time per lookup.

The networks are a seeded random mix (about 60% IPv4, 40% IPv6) of
realistic prefix lengths plus a tail of unusual ones, some limited to
services (``smtp``; ``imap,pop3``). None overlaps the ranges used for
guaranteed misses (198.18.0.0/15, 2001:db8::/32).

Measured:

1. ``NetworkRule.parse`` of the 100k texts, then ``RuleSet(rules)``;
2. end to end from the database: ``saslnetauth init`` on a fresh SQLite
   file, 100k rows inserted into ``global_networks`` with plain SQL (as an
   admin script would), then ``SqlStore(url).global_rules()`` on a new
   store (cold: query + validation + index), the cached call, the
   version check once ``cache_seconds`` expired (nothing changed: one
   query, no reload), and the reload after one row changed (trigger-bumped
   ``rules_generation``; unchanged rows reuse their parsed rules);
3. lookups for ``service=smtp``: IPv4/IPv6 hits (addresses inside random
   rules that apply to smtp) and misses, as ``RuleSet.match(addr)`` with
   a parsed address and as ``match(parse_address(text))`` from the text
   the client sent.

Targets: lookup <= 20 us, load <= 1 s.

With ``--serve-seconds N`` it also runs ``saslnetauth serve`` on that
database for N seconds under a steady light load (4 connections, PLAIN
user, allowed) and prints the latency distribution and the slow requests
over time (each decision worker process holds its own copy, checks its
version inline once ``global_cache_seconds`` passed, and re-reads it only
when it changed).

Usage::

    .venv/bin/python benchmarks/netrules_100k.py [--networks 100000] [--seed 1]
    .venv/bin/python benchmarks/netrules_100k.py --serve-seconds 70
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sqlite3
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    banner,
    bench_dir,
    cli,
    command_line,
    exit_on_sigterm,
    machine_summary,
    table,
)
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet, parse_address

T = TypeVar("T")

MISS_V4 = ipaddress.ip_network("198.18.0.0/15")
MISS_V6 = ipaddress.ip_network("2001:db8::/32")
V4_LENGTHS = [8, 12, 16, 20, 22, 23, 24, 24, 24, 24, 25, 26, 27, 28, 29, 30, 32, 32, 32, 32]
V6_LENGTHS = [32, 32, 36, 40, 44, 48, 48, 48, 56, 56, 64, 64, 64, 64, 96, 112, 128, 128]
SERVICES = [None] * 8 + ["smtp", "imap,pop3"]


def make_networks(n: int, rng: random.Random) -> list[tuple[str, str | None]]:
    """``n`` distinct (network text, services) pairs."""
    seen: set[str] = set()
    out: list[tuple[str, str | None]] = []
    while len(out) < n:
        if rng.random() < 0.6:
            plen = rng.choice(V4_LENGTHS) if rng.random() < 0.9 else rng.randint(8, 32)
            value = rng.getrandbits(32) >> (32 - plen) << (32 - plen)
            net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network(
                (value, plen)
            )
            if net.overlaps(MISS_V4):
                continue
        else:
            plen = rng.choice(V6_LENGTHS) if rng.random() < 0.8 else rng.randint(32, 128)
            value = (0x2000 << 112 | rng.getrandbits(116)) >> (128 - plen) << (128 - plen)
            net = ipaddress.IPv6Network((value, plen))
            if net.overlaps(MISS_V6):
                continue
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if text in seen:
            continue
        seen.add(text)
        out.append((text, rng.choice(SERVICES)))
    return out


def addresses(
    nets: list[tuple[str, str | None]], rng: random.Random, count: int
) -> dict[str, list[str]]:
    """Hit and miss addresses per IP version (hits only inside rules that apply to smtp)."""
    smtp = [ipaddress.ip_network(t) for t, s in nets if s is None or "smtp" in s]
    v4 = [n for n in smtp if n.version == 4]
    v6 = [n for n in smtp if n.version == 6]

    def inside(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
        host = rng.getrandbits(net.max_prefixlen - net.prefixlen) if net.num_addresses > 1 else 0
        return str(net.network_address + host)

    return {
        "IPv4 hit": [inside(rng.choice(v4)) for _ in range(count)],
        "IPv4 miss": [str(MISS_V4.network_address + rng.getrandbits(17)) for _ in range(count)],
        "IPv6 hit": [inside(rng.choice(v6)) for _ in range(count)],
        "IPv6 miss": [str(MISS_V6.network_address + rng.getrandbits(96)) for _ in range(count)],
    }


def timed(fn: Callable[[], object], repeat: int = 5) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls, and the last result."""
    times = []
    result: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def per_call_us(fn: Callable[[T], object], items: Sequence[T], repeat: int = 5) -> float:
    """Median over ``repeat`` passes of the mean time per item, in microseconds."""
    passes = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        passes.append((time.perf_counter() - t0) / len(items))
    return statistics.median(passes) * 1e6


def serve_stalls(tmp: Path, url: str, seconds: float) -> list[list[object]]:
    """Steady light load against serve; latency percentiles and the slow requests."""
    import asyncio

    from benchmarks.common import ALLOWED_IP, ms, percentile, saslnetauth_server
    from benchmarks.loadgen import LoadResult, LoadState, Login, run_load

    cli("user", "add", "netuser", "--hash", "{PLAIN}net-pw", "--net", ALLOWED_IP, db=url)
    login = [Login("netuser", "net-pw", ALLOWED_IP, True)]
    times: list[float] = []

    async def go(target: str) -> LoadResult:
        t0 = time.monotonic()

        async def watch(state: LoadState) -> None:
            seen = 0
            lat = state.latencies
            while True:
                await asyncio.sleep(0.05)
                now = time.monotonic() - t0
                times.extend([now] * (len(lat) - seen))
                seen = len(lat)

        return await run_load(target, login, connections=4, seconds=seconds, monitor=watch)

    t_start = time.monotonic()
    with saslnetauth_server(tmp, url, failure_delay=0.0) as sna:
        ready = time.monotonic() - t_start
        res = asyncio.run(go(sna.target))
    lat = res.latencies
    s = sorted(lat)
    slow = [(t, v) for t, v in zip(times, lat, strict=False) if v > 0.1]
    bursts: list[str] = []
    for t, v in slow:
        if not bursts or t - float(bursts[-1].split("s")[0]) > 2:
            bursts.append(f"{t:.0f}s:{v * 1000:.0f}ms")
    return [
        ["serve start-up until ready (workers load the networks)", f"{ready:.1f} s"],
        ["requests", len(lat)],
        ["errors", res.error_count],
        ["p50 / p99 / max ms", f"{ms(percentile(s, 50))} / {ms(percentile(s, 99))} / {ms(s[-1])}"],
        ["requests slower than 100 ms", len(slow)],
        ["first slow request of each burst (time:latency)", " ".join(bursts[:12]) or "-"],
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=100_000)
    ap.add_argument("--lookups", type=int, default=20_000, help="addresses per category")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serve-seconds", type=float, default=0.0, help="see above (0 = skip)")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    rng = random.Random(args.seed)
    banner(f"Network rules: {args.networks:,} global networks")
    print(f"machine: {machine_summary()}")
    nets = make_networks(args.networks, rng)
    v4 = sum(1 for t, _ in nets if ":" not in t)
    print(
        f"networks: {v4:,} IPv4 + {len(nets) - v4:,} IPv6, "
        f"{sum(1 for _, s in nets if s):,} limited to services"
    )

    parse_s, rules_obj = timed(lambda: [NetworkRule.parse(t, s) for t, s in nets], repeat=3)
    rules = rules_obj if isinstance(rules_obj, list) else []
    build_s, rs_obj = timed(lambda: RuleSet(rules), repeat=3)
    ruleset = rs_obj if isinstance(rs_obj, RuleSet) else RuleSet(rules)
    tracemalloc.start()
    RuleSet(rules)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lengths4 = len({n.prefixlen for r in rules for n in r.networks if n.version == 4})
    lengths6 = len({n.prefixlen for r in rules for n in r.networks if n.version == 6})

    db_rows = []
    with bench_dir("sna-net100k-") as tmp:
        url = f"sqlite:///{tmp / 'net.db'}"
        cli("init", db=url)
        t0 = time.perf_counter()
        con = sqlite3.connect(tmp / "net.db")
        with con:
            con.executemany(
                "INSERT INTO global_networks (network, services, comment) VALUES (?, ?, ?)",
                [(t, s, None) for t, s in nets],
            )
        con.close()
        insert_s = time.perf_counter() - t0
        from saslnetauth.store import SqlStore
        from saslnetauth.store.schema import global_networks

        def cold() -> RuleSet:
            store = SqlStore(url)
            try:
                return store.global_rules()
            finally:
                store.close()

        cold_s, loaded = timed(cold, repeat=5)
        assert isinstance(loaded, RuleSet) and len(loaded) == len(nets), "rows lost on load"
        store = SqlStore(url)
        store.global_rules()
        cached_s, _ = timed(store.global_rules, repeat=1000)

        def recheck() -> RuleSet:
            store.global_rules_cache.expire()  # as if cache_seconds had passed
            return store.global_rules()

        reloads = store.global_rules_cache.reloads
        recheck_s, _ = timed(recheck, repeat=20)
        assert store.global_rules_cache.reloads == reloads, "reloaded although nothing changed"
        if args.serve_seconds > 0:
            serve_rows = serve_stalls(tmp, url, args.serve_seconds)
        flip = iter(range(10**6))

        def changed_reload() -> RuleSet:
            with store.engine.begin() as conn:  # one row edited in place, as a script would
                conn.execute(
                    global_networks.update()
                    .where(global_networks.c.id == 1)
                    .values(comment=f"edit {next(flip)}")
                )
            store.global_rules_cache.expire()
            return store.global_rules()

        reload_s, _ = timed(changed_reload, repeat=3)
        store.close()
        db_rows = [
            ["INSERT 100k rows (sqlite3 executemany, one transaction)", f"{insert_s:.3f} s"],
            ["SqlStore(url).global_rules(), cold (median of 5)", f"{cold_s:.3f} s"],
            ["global_rules(), cached", f"{cached_s * 1e6:.2f} us"],
            ["global_rules(), version check after cache_seconds", f"{recheck_s * 1e3:.2f} ms"],
            ["global_rules(), one row edited (UPDATE + reload)", f"{reload_s:.3f} s"],
        ]

    if args.serve_seconds > 0:
        banner(f"saslnetauth serve with {len(nets):,} global networks, {args.serve_seconds:.0f} s")
        print(table(["", "value"], serve_rows))
    samples = addresses(nets, rng, args.lookups)
    parsed = {k: [parse_address(a) for a in v] for k, v in samples.items()}
    look_rows = []
    worst = 0.0
    for name, texts in samples.items():
        addrs = parsed[name]
        hits = sum(1 for a in addrs if ruleset.match(a, "smtp") is not None)
        expect = len(addrs) if "hit" in name else 0
        status = "ok" if hits == expect else f"WRONG ({hits} hits, expected {expect})"
        t_match = per_call_us(lambda a: ruleset.match(a, "smtp"), addrs)
        t_full = per_call_us(lambda text: ruleset.match(parse_address(text), "smtp"), texts)
        worst = max(worst, t_full)
        look_rows.append([name, len(addrs), status, f"{t_match:.2f}", f"{t_full:.2f}"])

    banner("Results")
    print(
        table(
            ["step", "time"],
            [
                [f"NetworkRule.parse x {len(nets):,} (median of 3)", f"{parse_s:.3f} s"],
                ["RuleSet(rules) (median of 3)", f"{build_s:.3f} s"],
                ["parse + RuleSet", f"{parse_s + build_s:.3f} s"],
                ["RuleSet memory (tracemalloc peak while building)", f"{peak / 2**20:.1f} MiB"],
                *db_rows,
            ],
        )
    )
    print(f"distinct prefix lengths: IPv4 {lengths4}, IPv6 {lengths6} (= dict probes on a miss)")
    print()
    print(
        table(
            ["lookup (service smtp)", "addresses", "verdicts", "match us", "parse+match us"],
            look_rows,
        )
    )
    print()
    load = "MET" if cold_s <= 1.0 else "NOT MET"
    build = "MET" if parse_s + build_s <= 1.0 else "NOT MET"
    look = "MET" if worst <= 20 else "NOT MET"
    print(f"target load <= 1 s (NetworkRule.parse + RuleSet): {build} ({parse_s + build_s:.3f} s)")
    print(f"target load <= 1 s (from the database): {load} ({cold_s:.3f} s)")
    print(f"target lookup <= 20 us (worst, incl. parse): {look} ({worst:.2f} us)")
    print(f"reproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
