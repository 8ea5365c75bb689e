"""saslnetauth-checkpassword under Dovecot 2.3: fast path, fallback, and a stdlib floor.

Dovecot's checkpassword passdb forks the program once per login, so its
start-up cost is paid per login. Three programs are compared:

fast      ``saslnetauth-checkpassword --socket unix:SOCK`` with ``saslnetauth
          serve`` running (asks the server; imports only the standard library)
fallback  the same program with no server at ``--socket`` (decides in-process:
          SQLAlchemy, passlib, the engine) and ``--database URL``
floor     a stdlib-only Python checkpassword (read fd 3, compare with a
          constant, set USER, exec the reply program) run by the SAME
          interpreter: the least any Python checkpassword can cost here

The user's hash is ``{PLAIN}`` so that hashing costs nothing and the
program's own overhead is what is measured.

Part 1 drives Dovecot (one private instance per program, all running,
each with ``passdb { driver = checkpassword }``) with the load generator
over Dovecot's auth-client socket: 1 and several connections, allowed
logins only (Dovecot 2.3.19 holds every FAIL for its 500 ms failure tick).

Part 2 times the program itself: fork+exec with the input on fd 3 and the
reply program ``/bin/true``, like Dovecot does, median of ``--calls``
(default 200) calls, the programs interleaved. Extra rows show what the
interpreter's start-up costs (``python -c pass``, ``-I -S``) and the fast
path started without ``site`` (no .pth processing).

Target: fast path p50 <= 1.5 x the floor.

Usage::

    .venv/bin/python benchmarks/checkpassword.py [--calls 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    BIN,
    PYTHON,
    ROOT,
    BenchUser,
    banner,
    bench_dir,
    clean_env,
    command_line,
    exit_on_sigterm,
    machine_summary,
    make_database,
    ms,
    percentile,
    rate,
    saslnetauth_server,
    spawn_with_fd3,
    table,
)
from benchmarks.loadgen import Login, run_load

USER = "alice"
PASSWORD = "cp-bench-pw"
PROGRAM = BIN / "saslnetauth-checkpassword"
REPLY = "/bin/true"

FLOOR = f"""\
#!{PYTHON}
# stdlib-only checkpassword floor (benchmarks/checkpassword.py)
import os
import sys

data = os.read(3, 513)
user, password, _ = data.split(b"\\0", 2)
if user == {USER.encode()!r} and password == {PASSWORD.encode()!r}:
    os.environ["USER"] = user.decode()
    os.execv(sys.argv[1], sys.argv[1:])
os._exit(1)
"""

#: The fast path without the interpreter's site step (what a -S launcher would cost).
NO_SITE = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    "from saslnetauth.dovecot.checkpassword import main; "
    "sys.argv[0] = 'saslnetauth-checkpassword'; main()"
)


def checkpassword_dovecot(directory: Path, name: str, argv: list[str]) -> Any:
    from tests.support import DovecotInstance, static_userdb

    passdb = f"passdb {{\n  driver = checkpassword\n  args = {' '.join(argv)}\n}}\n"
    return DovecotInstance(
        directory / name,
        passdb=passdb,
        userdb=static_userdb(directory / name / "home", allow_all_users=True),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="direct calls per program")
    ap.add_argument("--conns", default="1,4", help="connections to Dovecot, e.g. 1,4")
    ap.add_argument("--quick", action="store_true", help="fewer calls and requests")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    calls = 40 if args.quick else args.calls
    conn_list = [int(c) for c in args.conns.split(",")]
    banner("saslnetauth-checkpassword: fast path vs fallback vs stdlib floor")
    print(f"machine: {machine_summary()}")
    with bench_dir("sna-cp-") as tmp:
        db = make_database(tmp, [BenchUser(USER, PASSWORD, "{PLAIN}" + PASSWORD)])
        floor = tmp / "floor-checkpassword.py"
        floor.write_text(FLOOR)
        floor.chmod(0o755)
        with saslnetauth_server(tmp, db, failure_delay=0.0) as sna:
            programs = {
                "fast": [str(PROGRAM), "--socket", sna.target],
                "fallback": [
                    str(PROGRAM),
                    "--socket",
                    f"unix:{tmp / 'no-server.sock'}",
                    "--database",
                    db,
                ],
                "floor": [str(floor)],
            }
            for name, prog in programs.items():
                print(f"{name:9s} {' '.join(prog)} REPLY-PROGRAM")
            dovecot_rows = part_dovecot(tmp, programs, conn_list, args.quick)
            direct_rows = part_direct(tmp, programs, sna.target, calls)
            server_lines = sna.log().count("auth ok:")
    banner("Part 1: logins through Dovecot's auth-client socket (checkpassword passdb)")
    print(
        table(
            ["program", "conns", "reqs", "logins/s", "p50 ms", "p99 ms", "errors", "p50/floor"],
            dovecot_rows,
        )
    )
    banner(f"Part 2: the program's own wall time, fork+exec with fd 3 ({calls} calls each)")
    print(
        table(["program", "calls", "exit", "p50 ms", "p90 ms", "mean ms", "p50/floor"], direct_rows)
    )
    print()
    print(f"auth ok lines in the server log (fast path answered by the server): {server_lines}")
    fast = next(r for r in direct_rows if r[0] == "fast")
    verdict = "MET" if float(fast[-1]) <= 1.5 else "NOT MET"
    print(f"target fast p50 <= 1.5 x floor p50: {verdict} ({fast[-1]} x)")
    print(f"reproduce: {command_line()}")
    return 0


def part_dovecot(
    tmp: Path, programs: dict[str, list[str]], conn_list: list[int], quick: bool
) -> list[list[object]]:
    instances = {
        name: checkpassword_dovecot(tmp, f"dovecot-{name}", prog) for name, prog in programs.items()
    }
    rows: list[list[object]] = []
    started = []
    try:
        for inst in instances.values():
            inst.start()
            started.append(inst)
        login = [Login(USER, PASSWORD, ALLOWED_IP, True, label="allowed")]
        results: dict[tuple[str, int], list[float]] = {}
        stats: dict[tuple[str, int], list[float]] = {}
        for conns in conn_list:
            for inst in instances.values():  # warm up (page cache, pyc files)
                asyncio.run(run_load(f"unix:{inst.auth_socket}", login, connections=1, requests=3))
            for _ in range(2):  # two alternating rounds
                for name, inst in instances.items():
                    n = 30 if name == "fallback" else 150
                    n = max(conns, (n // 3 if quick else n) * max(1, conns // 2))
                    res = asyncio.run(
                        run_load(
                            f"unix:{inst.auth_socket}",
                            login,
                            connections=conns,
                            requests=n,
                            timeout=120,
                        )
                    )
                    results.setdefault((name, conns), []).extend(res.latencies)
                    st = stats.setdefault((name, conns), [0.0, 0.0])
                    st[0] += res.elapsed
                    st[1] += res.error_count
        for conns in conn_list:
            floor_p50 = percentile(sorted(results[("floor", conns)]), 50)
            for name in programs:
                lat = sorted(results[(name, conns)])
                elapsed, errors = stats[(name, conns)]
                p50 = percentile(lat, 50)
                rows.append(
                    [
                        name,
                        conns,
                        len(lat),
                        rate(len(lat) / elapsed),
                        ms(p50),
                        ms(percentile(lat, 99)),
                        int(errors),
                        f"{p50 / floor_p50:.2f}",
                    ]
                )
    finally:
        for inst in started:
            inst.stop()
    return rows


def part_direct(
    tmp: Path, programs: dict[str, list[str]], target: str, calls: int
) -> list[list[object]]:
    env = clean_env(
        SERVICE="smtp",
        TCPREMOTEIP=ALLOWED_IP,
        TCPLOCALIP="127.0.0.1",
        PROTO="TCP",
        PATH="/usr/sbin:/usr/bin:/sbin:/bin",
    )
    data = f"{USER}\0{PASSWORD}\0\0".encode()
    cases = {name: [*prog, REPLY] for name, prog in programs.items()}
    cases["fast, python -S (no site)"] = [PYTHON, "-S", "-c", NO_SITE, "--socket", target, REPLY]
    cases["floor, python -I -S"] = [PYTHON, "-I", "-S", str(tmp / "floor-checkpassword.py"), REPLY]
    cases["python -c pass"] = [PYTHON, "-c", "pass"]
    cases["python -I -S -c pass"] = [PYTHON, "-I", "-S", "-c", "pass"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    codes: dict[str, set[int]] = {name: set() for name in cases}
    for argv in cases.values():  # warm the page cache and __pycache__
        spawn_with_fd3(argv, data, env)
    t0 = time.monotonic()
    for i in range(calls):
        names = list(cases)
        if i % 2:
            names.reverse()
        for name in names:
            code, wall = spawn_with_fd3(cases[name], data, env)
            times[name].append(wall)
            codes[name].add(code)
    print(f"direct calls took {time.monotonic() - t0:.0f} s")
    floor_p50 = statistics.median(times["floor"])
    rows: list[list[object]] = []
    for name, ts in times.items():
        s = sorted(ts)
        p50 = statistics.median(s)
        rows.append(
            [
                name,
                len(s),
                ",".join(map(str, sorted(codes[name]))),
                ms(p50),
                ms(percentile(s, 90)),
                ms(statistics.fmean(s)),
                f"{p50 / floor_p50:.2f}",
            ]
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
