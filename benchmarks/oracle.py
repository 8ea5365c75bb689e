"""Timing and reply oracle (issue 5.1, issue 11 item 5): can a client tell WHY a
login failed, or which names exist, or which hash scheme a user has?

Failing cases against ``saslnetauth serve`` with the per-client and per-user
brakes off (so nothing but the fixed failure deadline hides a difference).
Users are added with ``saslnetauth user add``: alice and bob with the default
ARGON2ID (m=65536 t=3 p=1, as ``doveadm pw``), sam with SHA512-CRYPT (5000
rounds) and bea with BLF-CRYPT (cost 10), as an import brings them:

unknown user             ``carol`` (no such user; a dummy ARGON2ID is verified)
wrong pw ARGON2ID        ``alice``, wrong password, from her network
wrong pw SHA512-CRYPT    ``sam``, wrong password, from his network
wrong pw BLF-CRYPT       ``bea``, wrong password, from her network
disabled user            ``bob`` (disabled, ARGON2ID), right password
forbidden net ARGON2ID   ``alice``, right password, from 127.0.0.3
forbidden net SHA512     ``sam``, right password, from 127.0.0.3
wrong pw, pw changed     ``rita`` (ARGON2ID; her password was changed with ``user
                         passwd``), a wrong password that never was hers
retired pw, own net      ``rita``, her old password, from her network
retired pw, other net    ``rita``, her old password, from 127.0.0.3
wrong pw PLAIN           ``pat`` (``{PLAIN}``: decided in the server process when
                         cheap, serve/decide/inline.py), wrong password, own network
forbidden net PLAIN      ``pat``, right password, from 127.0.0.3

A retired password costs a second hash when a worker is free and the deadline
leaves room (docs/alerts.md, "Retired passwords"): the log's reason counts say how many
were checked; the reply and its moment must not differ either way.

Two runs: failure delay 0 (only the measured slowest verification, the
"failure floor", hides the schemes) and the default 2 s. The cases are
interleaved in a seeded random order, ``--tries`` each (default 200), after a
warm-up of 5 each; with a failure delay of a second or more they are spread
over ``--concurrency`` connections (each one request at a time), which only
shortens the run: every reply still leaves at its own deadline. Printed per
case: median, Q1, Q3, IQR; then whether the medians are within 5% of each
other and whether the IQRs overlap.

Replies: the FAIL line must be identical for every case once the request id
and the ``user=`` value are masked, byte-identical for the same user name,
and ``user=`` must be the name that was sent.

The cases then go through ``saslnetauth-checkpassword`` (fast path, the
server with failure delay 0; ``--checkpassword-tries`` each): exit code, wall
time of fork+exec (input on fd 3), and the bytes written to stderr.

Last, under a flood of guesses for one user (issue 21 item 3,
:mod:`benchmarks.oracle_flood`): an unknown name and existing ones, with and
without an app password that covers the attacker's addresses, must get the same
reply (never TEMPFAIL) with medians within 5%.

Usage::

    .venv/bin/python benchmarks/oracle.py [--tries 200] [--seed 5] [--delays 0,2]
        [--flood-tries 30] [--skip-flood]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    BIN,
    DENIED_IP,
    BenchUser,
    banner,
    bench_dir,
    clean_env,
    cli,
    command_line,
    exit_on_sigterm,
    machine_summary,
    make_database,
    quartiles,
    saslnetauth_server,
    spawn_capture_fd3,
    table,
)
from benchmarks.loadgen import AuthConnection, Login
from benchmarks.oracle_flood import flood_report

PASSWORD = "0racle-pass"
WRONG = "not-the-password"
OLD = "0racle-old-pass"

CASES = {
    "unknown user": Login("carol", PASSWORD, ALLOWED_IP, False),
    "wrong pw ARGON2ID": Login("alice", WRONG, ALLOWED_IP, False),
    "wrong pw SHA512-CRYPT": Login("sam", WRONG, ALLOWED_IP, False),
    "wrong pw BLF-CRYPT": Login("bea", WRONG, ALLOWED_IP, False),
    "disabled user": Login("bob", PASSWORD, ALLOWED_IP, False),
    "forbidden net ARGON2ID": Login("alice", PASSWORD, DENIED_IP, False),
    "forbidden net SHA512": Login("sam", PASSWORD, DENIED_IP, False),
    "wrong pw, pw changed": Login("rita", WRONG, ALLOWED_IP, False),
    "retired pw, own net": Login("rita", OLD, ALLOWED_IP, False),
    "retired pw, other net": Login("rita", OLD, DENIED_IP, False),
    "wrong pw PLAIN": Login("pat", WRONG, ALLOWED_IP, False),
    "forbidden net PLAIN": Login("pat", PASSWORD, DENIED_IP, False),
}
#: Pairs of cases for the same user name: their reply lines must be byte-identical.
SAME_USER = (
    ("wrong pw ARGON2ID", "forbidden net ARGON2ID"),
    ("wrong pw SHA512-CRYPT", "forbidden net SHA512"),
    ("wrong pw, pw changed", "retired pw, own net"),
    ("wrong pw, pw changed", "retired pw, other net"),
    ("wrong pw PLAIN", "forbidden net PLAIN"),
)
LIMIT = 0.05


def stats_rows(samples: dict[str, list[float]], unit: float = 1000.0) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, values in samples.items():
        q1, med, q3 = quartiles(values)
        rows.append(
            [
                name,
                len(values),
                f"{med * unit:.2f}",
                f"{q1 * unit:.2f}",
                f"{q3 * unit:.2f}",
                f"{(q3 - q1) * unit:.2f}",
            ]
        )
    return rows


def verdicts(samples: dict[str, list[float]]) -> list[str]:
    qs = {name: quartiles(v) for name, v in samples.items()}
    medians = [q[1] for q in qs.values()]
    spread = max(medians) / min(medians) - 1
    overlap = max(q[0] for q in qs.values()) <= min(q[2] for q in qs.values())
    return [
        f"medians within {LIMIT:.0%}: {'YES' if spread <= LIMIT else 'NO'} "
        f"(largest/smallest - 1 = {spread * 100:.1f}%)",
        f"IQRs overlap: {'YES' if overlap else 'NO'} "
        f"(max Q1 {max(q[0] for q in qs.values()) * 1000:.2f} ms "
        f"vs min Q3 {min(q[2] for q in qs.values()) * 1000:.2f} ms)",
    ]


def order(tries: int, seed: int) -> list[str]:
    seq = [name for name in CASES for _ in range(tries)]
    random.Random(seed).shuffle(seq)
    return seq


async def server_part(
    target: str, tries: int, seed: int, concurrency: int
) -> tuple[dict[str, list[float]], dict[str, set[bytes]]]:
    tails = {name: login.tail() for name, login in CASES.items()}
    loop = asyncio.get_running_loop()
    conns = [await AuthConnection.open(target) for _ in range(concurrency)]
    for _ in range(5):
        for name in CASES:
            await conns[0].request(tails[name], 120)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    lines: dict[str, set[bytes]] = {name: set() for name in CASES}
    seq = order(tries, seed)

    async def client(conn: AuthConnection, share: list[str]) -> None:
        for name in share:
            t0 = loop.time()
            rid, line = await conn.request(tails[name], 120)
            times[name].append(loop.time() - t0)
            lines[name].add(line.replace(b"\t%d\t" % rid, b"\t<id>\t", 1))

    await asyncio.gather(*(client(c, seq[i::concurrency]) for i, c in enumerate(conns)))
    for conn in conns:
        conn.close()
    return times, lines


def checkpassword_part(
    target: str, tries: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, set[int]], dict[str, set[bytes]]]:
    program = [str(BIN / "saslnetauth-checkpassword"), "--socket", target, "/bin/true"]
    base = clean_env(SERVICE="smtp", TCPLOCALIP="127.0.0.1", PATH="/usr/bin:/bin")
    times: dict[str, list[float]] = {name: [] for name in CASES}
    codes: dict[str, set[int]] = {name: set() for name in CASES}
    errs: dict[str, set[bytes]] = {name: set() for name in CASES}

    def call(name: str) -> tuple[int, float, bytes]:
        login = CASES[name]
        env = dict(base, TCPREMOTEIP=login.rip or "")
        data = f"{login.user}\0{login.password}\0\0".encode()
        return spawn_capture_fd3(program, data, env)

    for name in CASES:
        call(name)
    for name in order(tries, seed + 1):
        code, wall, err = call(name)
        times[name].append(wall)
        codes[name].add(code)
        errs[name].add(err)
    return times, codes, errs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=200, help="tries per case (server)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--delays", default="0,2", help="failure delays to run, comma separated")
    ap.add_argument(
        "--concurrency", type=int, default=8, help="connections when the delay is >= 1 s"
    )
    ap.add_argument(
        "--concurrency-zero", type=int, default=1, help="connections when the delay is < 1 s"
    )
    ap.add_argument("--checkpassword-tries", type=int, default=50)
    ap.add_argument("--skip-checkpassword", action="store_true")
    ap.add_argument("--flood-tries", type=int, default=30, help="probes per case under a flood")
    ap.add_argument("--flood-in-flight", type=int, default=60, help="guesses in flight")
    ap.add_argument("--flood-concurrency", type=int, default=4, help="probe connections")
    ap.add_argument("--skip-flood", action="store_true")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    banner(
        "Oracle: unknown user / wrong password (3 schemes) / disabled / forbidden network"
        " / retired password"
    )
    print(f"machine: {machine_summary()}")
    failures = 0
    from saslnetauth.credentials.passwords import PasswordHasher

    with bench_dir("sna-oracle-") as tmp:
        users = [
            BenchUser("alice", PASSWORD, None, (ALLOWED_IP,)),
            BenchUser("bob", PASSWORD, None, (ALLOWED_IP,), disabled=True),
            BenchUser("sam", PASSWORD, PasswordHasher("SHA512-CRYPT").hash(PASSWORD)),
            BenchUser("bea", PASSWORD, PasswordHasher("BLF-CRYPT").hash(PASSWORD)),
            BenchUser("rita", OLD, None, (ALLOWED_IP,)),
            BenchUser("pat", PASSWORD, "{PLAIN}" + PASSWORD),
        ]
        db = make_database(tmp, users)
        cli("user", "passwd", "rita", "--password-stdin", db=db, stdin=PASSWORD + "\n")
        print(f"stored hashes: {stored_schemes(db, users)}")
        for delay in (float(d) for d in args.delays.split(",")):
            concurrency = args.concurrency if delay >= 1 else args.concurrency_zero
            with saslnetauth_server(
                tmp,
                db,
                failure_delay=delay,
                serve={"penalty_max": 0, "user_penalty": False},
                name=f"serve-{delay:g}",
            ) as sna:
                floor = re.findall(r"failure_floor=([0-9.]+)", sna.log())
                print()
                print(f"server: {' '.join(sna.argv[1:])}")
                print(f"failure floor measured at start: {floor[0] if floor else '?'} s")
                times, lines = asyncio.run(
                    server_part(sna.target, args.tries, args.seed, concurrency)
                )
                banner(
                    f"saslnetauth serve, failure delay {delay:g} s, {args.tries} tries per "
                    f"case, {concurrency} connection(s)"
                )
                print(
                    table(["case", "n", "median ms", "Q1 ms", "Q3 ms", "IQR ms"], stats_rows(times))
                )
                for line in verdicts(times):
                    print(line)
                    failures += line.startswith(f"medians within {LIMIT:.0%}: NO")
                print()
                print("reply lines (request id masked):")
                for name, found in lines.items():
                    for raw in sorted(found):
                        print(f"  {name:24s} {raw!r}")
                failures += check_replies(lines)
                if delay == 0 and not args.skip_checkpassword:
                    failures += checkpassword_report(
                        sna.target, args.checkpassword_tries, args.seed
                    )
                reasons = re.findall(r"reason=(\w+)", sna.log())
                print()
                print(
                    "server log reasons (true reasons, logged only): "
                    + ", ".join(f"{r}={reasons.count(r)}" for r in sorted(set(reasons)))
                )
        if not args.skip_flood:
            failures += flood_report(
                tmp,
                args.flood_tries,
                args.seed,
                args.flood_in_flight,
                args.flood_concurrency,
                stats_rows,
                verdicts,
                LIMIT,
            )
    print(f"reproduce: {command_line()}")
    return 1 if failures else 0


def stored_schemes(db: str, users: list[BenchUser]) -> dict[str, str]:
    from saslnetauth.credentials.passwords import split_scheme
    from saslnetauth.store import SqlStore

    store = SqlStore(db)
    try:
        out = {}
        for u in users:
            rec = store.get_user(u.name)
            stored = rec.password_hash if rec else None
            out[u.name] = split_scheme(stored)[0] or "?" if stored else "?"
        return out
    finally:
        store.close()


def checkpassword_report(target: str, tries: int, seed: int) -> int:
    ctimes, codes, errs = checkpassword_part(target, tries, seed)
    banner(f"saslnetauth-checkpassword (fast path), {tries} calls per case")
    rows = stats_rows(ctimes)
    for row, name in zip(rows, CASES, strict=True):
        row.insert(2, ",".join(map(str, sorted(codes[name]))))
    print(table(["case", "n", "exit", "median ms", "Q1 ms", "Q3 ms", "IQR ms"], rows))
    for line in verdicts(ctimes):
        print(line)
    all_codes = set().union(*codes.values())
    all_errs = set().union(*errs.values())
    print(f"exit codes over all cases: {sorted(all_codes)} (1 = wrong credentials)")
    print(f"stderr over all cases: {sorted(all_errs)!r}")
    if all_codes != {1} or len(all_errs) != 1:
        print("CHECKPASSWORD ORACLE: exit codes or stderr differ between cases")
        return 1
    return 0


def check_replies(lines: dict[str, set[bytes]]) -> int:
    """Print the reply checks; returns the number of failed checks."""
    failed = 0
    for name, found in lines.items():
        if len(found) != 1:
            print(f"FAIL: {name} got {len(found)} different reply lines")
            failed += 1
    for a, b in SAME_USER:
        same = lines[a] == lines[b]
        print(f"{a} vs {b} (same user), byte-identical: {'YES' if same else 'NO'}")
        failed += not same
    masked = {
        re.sub(rb"\tuser=[^\t]*", b"\tuser=<name>", line)
        for found in lines.values()
        for line in found
    }
    print(f"all cases identical with user= masked: {'YES' if len(masked) == 1 else 'NO'}")
    failed += len(masked) != 1
    for name, found in lines.items():
        want = b"\tuser=" + CASES[name].user.encode()
        for line in found:
            if want not in line:
                print(f"FAIL: {name}: reply does not echo the user name: {line!r}")
                failed += 1
    if not failed:
        print("reply checks: all passed")
    return failed


if __name__ == "__main__":
    sys.exit(main())
