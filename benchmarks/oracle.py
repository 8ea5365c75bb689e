"""Timing and reply oracle (issue 5.1): can a client tell WHY a login failed?

Four failing cases against ``saslnetauth serve`` with failure delay 0 and
penalty off (so nothing hides a difference), users created by ``saslnetauth
user add`` (default ARGON2ID, m=65536 t=3 p=1, as ``doveadm pw``):

unknown user      ``carol`` (no such user; a dummy hash is verified)
wrong password    ``alice``, wrong password, from her network
disabled user     ``bob`` (disabled), right password, from his network
forbidden network ``alice``, right password, from 127.0.0.3

The four are interleaved in a seeded random order on one connection, one
at a time, ``--tries`` each (default 200), after a warm-up of 5 each (the
first unknown user pays for creating the dummy hash). Printed per case:
median, Q1, Q3, IQR; then whether the medians are within 10% of each
other and whether the IQRs overlap.

Replies: the FAIL line must be byte-identical for the same user name
(wrong password vs forbidden network, both ``alice``), and identical for
all four once the request id and the ``user=`` value are masked; the
``user=`` value must be the name that was sent.

The same four cases then go through ``saslnetauth-checkpassword`` (fast
path, the server above): exit code, wall time of fork+exec (input on
fd 3), and the bytes written to stderr.

Usage::

    .venv/bin/python benchmarks/oracle.py [--tries 200] [--seed 5]
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

PASSWORD = "0racle-pass"
WRONG = "not-the-password"

CASES = {
    "unknown user": Login("carol", PASSWORD, ALLOWED_IP, False),
    "wrong password": Login("alice", WRONG, ALLOWED_IP, False),
    "disabled user": Login("bob", PASSWORD, ALLOWED_IP, False),
    "forbidden network": Login("alice", PASSWORD, DENIED_IP, False),
}


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
        f"medians within 10%: {'YES' if spread <= 0.10 else 'NO'} "
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
    target: str, tries: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, set[bytes]]]:
    conn = await AuthConnection.open(target)
    tails = {name: login.tail() for name, login in CASES.items()}
    loop = asyncio.get_running_loop()
    for _ in range(5):
        for name in CASES:
            await conn.request(tails[name], 120)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    lines: dict[str, set[bytes]] = {name: set() for name in CASES}
    for name in order(tries, seed):
        t0 = loop.time()
        rid, line = await conn.request(tails[name], 120)
        times[name].append(loop.time() - t0)
        lines[name].add(line.replace(b"\t%d\t" % rid, b"\t<id>\t", 1))
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
    ap.add_argument("--tries", type=int, default=200, help="tries per case (each part)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--skip-checkpassword", action="store_true")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    banner("Oracle: unknown user / wrong password / disabled / forbidden network")
    print(f"machine: {machine_summary()}")
    failures = 0
    with bench_dir("sna-oracle-") as tmp:
        users = [
            BenchUser("alice", PASSWORD, None, (ALLOWED_IP,)),
            BenchUser("bob", PASSWORD, None, (ALLOWED_IP,), disabled=True),
        ]
        db = make_database(tmp, users)
        with saslnetauth_server(
            tmp, db, failure_delay=0.0, serve={"penalty_max": 0, "user_penalty": False}
        ) as sna:
            from saslnetauth.store import SqlStore

            store = SqlStore(db)
            try:
                stored = {u.name: store.get_user(u.name) for u in users}
            finally:
                store.close()
            schemes = {
                name: (rec.password_hash or "")[: rec.password_hash.index("$", 12)]
                if rec and rec.password_hash
                else "?"
                for name, rec in stored.items()
            }
            print(f"stored hashes: {schemes}")
            print(f"server: {' '.join(sna.argv[1:])}")
            times, lines = asyncio.run(server_part(sna.target, args.tries, args.seed))
            banner(f"saslnetauth serve, {args.tries} tries per case, one connection")
            print(table(["case", "n", "median ms", "Q1 ms", "Q3 ms", "IQR ms"], stats_rows(times)))
            for line in verdicts(times):
                print(line)
            print()
            print("reply lines (request id masked):")
            for name, found in lines.items():
                for raw in sorted(found):
                    print(f"  {name:18s} {raw!r}")
            failures += check_replies(lines)
            if not args.skip_checkpassword:
                ctimes, codes, errs = checkpassword_part(sna.target, args.tries, args.seed)
                banner(f"saslnetauth-checkpassword (fast path), {args.tries} calls per case")
                rows = stats_rows(ctimes)
                for row, name in zip(rows, CASES, strict=True):
                    row.insert(2, ",".join(map(str, sorted(codes[name]))))
                print(
                    table(
                        ["case", "n", "exit", "median ms", "Q1 ms", "Q3 ms", "IQR ms"],
                        rows,
                    )
                )
                for line in verdicts(ctimes):
                    print(line)
                all_codes = set().union(*codes.values())
                all_errs = set().union(*errs.values())
                print(f"exit codes over all cases: {sorted(all_codes)} (1 = wrong credentials)")
                print(f"stderr over all cases: {sorted(all_errs)!r}")
                if all_codes != {1} or len(all_errs) != 1:
                    print("CHECKPASSWORD ORACLE: exit codes or stderr differ between cases")
                    failures += 1
            reasons = re.findall(r"reason=(\w+)", sna.log())
            print()
            print(
                "server log reasons (true reasons, logged only): "
                + ", ".join(f"{r}={reasons.count(r)}" for r in sorted(set(reasons)))
            )
    print(f"reproduce: {command_line()}")
    return 1 if failures else 0


def check_replies(lines: dict[str, set[bytes]]) -> int:
    """Print the reply checks; returns the number of failed checks."""
    failed = 0
    for name, found in lines.items():
        if len(found) != 1:
            print(f"FAIL: {name} got {len(found)} different reply lines")
            failed += 1
    same_user = lines["wrong password"] == lines["forbidden network"]
    print(
        "wrong password vs forbidden network (same user alice), byte-identical: "
        f"{'YES' if same_user else 'NO'}"
    )
    failed += not same_user
    masked = {
        re.sub(rb"\tuser=[^\t]*", b"\tuser=<name>", line)
        for found in lines.values()
        for line in found
    }
    print(f"all four identical with user= masked: {'YES' if len(masked) == 1 else 'NO'}")
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
