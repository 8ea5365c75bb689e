"""The oracle under a flood (issue 21 item 3), run by ``benchmarks/oracle.py``.

While eight connections keep ``--flood-in-flight`` wrong-password guesses for
``carol`` in flight (pipelined, each from a fresh random address), wrong-password
probes ask for:

unknown name                 ``zed`` (no such user)
existing, no app password    ``erin`` (her network is 127.0.0.2 only)
existing, app password any   ``dave`` (an app password valid from anywhere, as
                             carol has: the attacker's addresses are inside it)

in two phases: the guesses and probes from random addresses of 100.64.0.0/10
(inside no network but the app passwords' ``any``), then of 198.18.0.0/15 (a
global network: every name could succeed there). Users have the default ARGON2ID;
the brakes are off and the failure delay is the default 2 s. Printed per phase and
case: median, Q1, Q3, IQR, whether the medians are within 5%, the reply lines
(request id and ``user=`` masked) and how many were TEMPFAIL.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import BenchUser, banner, cli, make_database, saslnetauth_server, table
from benchmarks.loadgen import AuthConnection, Login, parse_target

PASSWORD = "0racle-pass"
GLOBAL = "198.18.0.0/15"
PHASES = {"outside (100.64/10)": (0x64400000, 22), f"global ({GLOBAL})": (0xC6120000, 17)}
CASES = {
    "unknown name": "zed",
    "existing, no app password": "erin",
    "existing, app password any": "dave",
}
FLOODERS = 8


def addresses(seed: int, start: int, bits: int) -> Callable[[], str]:
    rng = random.Random(seed)

    def draw() -> str:
        v = start + rng.randrange(1, 1 << bits)
        return ".".join(str((v >> s) & 255) for s in (24, 16, 8, 0))

    return draw


async def _flooder(
    target: str, per_conn: int, draw: Callable[[], str], stop: asyncio.Event, counts: dict[str, int]
) -> None:
    _, path, _ = parse_target(target)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"VERSION\t1\t2\nCPID\t4243\n")
    while (await asyncio.wait_for(reader.readline(), 30)).strip() != b"DONE":
        pass
    rid = 0

    def send() -> None:
        nonlocal rid
        rid += 1
        writer.write(b"AUTH\t%d%s" % (rid, Login("carol", f"guess{rid}", draw(), False).tail()))

    for _ in range(per_conn):
        send()
    outstanding = per_conn
    while outstanding:
        line = await asyncio.wait_for(reader.readline(), 60)
        if not line:
            break
        outstanding -= 1
        kind = "TEMPFAIL" if b"\ttemp" in line else line.split(b"\t", 1)[0].decode()
        counts[kind] = counts.get(kind, 0) + 1
        if not stop.is_set():
            send()
            outstanding += 1
    writer.close()


async def _phase(
    target: str, in_flight: int, tries: int, seed: int, start: int, bits: int, concurrency: int
) -> tuple[dict[str, list[float]], dict[str, set[bytes]], dict[str, int]]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    counts: dict[str, int] = {}
    per_conn = max(1, in_flight // FLOODERS)
    floods = [
        asyncio.ensure_future(
            _flooder(target, per_conn, addresses(seed + i, start, bits), stop, counts)
        )
        for i in range(FLOODERS)
    ]
    while sum(counts.values()) < 2 * in_flight:  # the load is on
        done = [f for f in floods if f.done()]
        for f in done:
            f.result()  # a flooder that failed stops the run with its error
        if done:
            raise RuntimeError("a flooding connection ended early")
        await asyncio.sleep(0.1)
    draw = addresses(seed + 100, start, bits)
    seq = [name for name in CASES for _ in range(tries)]
    random.Random(seed).shuffle(seq)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    lines: dict[str, set[bytes]] = {name: set() for name in CASES}
    conns = [await AuthConnection.open(target) for _ in range(concurrency)]

    async def client(conn: AuthConnection, share: list[str]) -> None:
        for name in share:
            tail = Login(CASES[name], "not-the-password", draw(), False).tail()
            t0 = loop.time()
            rid, line = await conn.request(tail, 30)
            times[name].append(loop.time() - t0)
            masked = line.replace(b"\t%d\t" % rid, b"\t<id>\t", 1)
            lines[name].add(re.sub(rb"\tuser=[^\t]*", b"\tuser=<name>", masked))

    await asyncio.gather(*(client(c, seq[i::concurrency]) for i, c in enumerate(conns)))
    for conn in conns:
        conn.close()
    stop.set()
    await asyncio.gather(*floods)
    return times, lines, counts


def flood_report(
    tmp: Path,
    tries: int,
    seed: int,
    in_flight: int,
    concurrency: int,
    stats_rows: Callable[[dict[str, list[float]]], list[list[object]]],
    verdicts: Callable[[dict[str, list[float]]], list[str]],
    limit: float,
) -> int:
    """Run both phases; print the figures; return the number of failed checks."""
    users = [
        BenchUser("carol", PASSWORD, None, ()),
        BenchUser("dave", PASSWORD, None, ("127.0.0.2",)),
        BenchUser("erin", PASSWORD, None, ("127.0.0.2",)),
    ]
    db = make_database(tmp, users, name="flood.db")
    cli("net", "add", GLOBAL, db=db)
    for name in ("carol", "dave"):
        cli("user", "app-password", "add", name, "--label", "any", "--net", "any", db=db)
    failures = 0
    with saslnetauth_server(
        tmp,
        db,
        failure_delay=2.0,
        serve={"penalty_max": 0, "user_penalty": False},
        name="serve-flood",
    ) as sna:
        for n, (phase, (start, bits)) in enumerate(PHASES.items()):
            times, lines, counts = asyncio.run(
                _phase(sna.target, in_flight, tries, seed + 1000 * n, start, bits, concurrency)
            )
            banner(
                f"under a flood, {phase}: {in_flight} guesses for carol in flight over "
                f"{FLOODERS} connections; {tries} probes per case, {concurrency} connection(s)"
            )
            print(table(["case", "n", "median ms", "Q1 ms", "Q3 ms", "IQR ms"], stats_rows(times)))
            for line in verdicts(times):
                print(line)
                failures += line.startswith(f"medians within {limit:.0%}: NO")
            print("flood replies: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            print("probe reply lines (request id and user= masked):")
            for name, found in lines.items():
                for raw in sorted(found):
                    print(f"  {name:28s} {raw!r}")
            masked = set().union(*lines.values())
            same = len(masked) == 1 and not any(b"\ttemp" in x for x in masked)
            print(f"one reply for every case, no TEMPFAIL: {'YES' if same else 'NO'}")
            failures += not same
    return failures
