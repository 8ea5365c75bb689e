"""Start-up of the commands, as whole processes, against ``python -c pass`` (issue 26).

Every case is a fresh process (posix_spawn to reaped exit), like an admin
script or Dovecot's checkpassword passdb runs it:

python -c pass            the interpreter alone (with the venv's site step): the unit
saslnetauth --help        importing the CLI and printing its help
user show alice           one read on a SQLite database the script creates
check alice --rip ...     the real decision engine on that database (a {PLAIN} hash:
                          no hashing cost, only start-up), password on stdin
checkpassword fast        ``saslnetauth-checkpassword --socket`` with ``saslnetauth
                          serve`` running, input on fd 3, reply program /bin/true
checkpassword floor       a stdlib-only Python checkpassword (benchmarks/checkpassword.py's
                          floor): the unit of the checkpassword row
import click / sqlalchemy informative: what those imports alone cost here

``--baseline DIR`` runs the same cases with another checkout (its own
``.venv`` if it has one, else this venv with DIR first on PYTHONPATH), the
two sides interleaved run by run, so that a shared machine's noise falls on
both. The server for the checkpassword rows and the database are this
tree's. Ratios are medians over medians of the same side.

Usage::

    .venv/bin/python benchmarks/cli_startup.py [--runs 40] [--baseline ../base]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.checkpassword import FLOOR
from benchmarks.common import (
    BIN,
    BenchUser,
    banner,
    bench_dir,
    clean_env,
    command_line,
    exit_on_sigterm,
    machine_summary,
    make_database,
    ms,
    saslnetauth_server,
    table,
)

USER = "alice"
PASSWORD = "cp-bench-pw"
RIP = "192.0.2.1"

#: case -> (the case whose median is its unit, target ratio or None)
TARGETS: dict[str, tuple[str, float | None]] = {
    "python -c pass": ("python -c pass", None),
    "python -c 'import click'": ("python -c pass", None),
    "python -c 'import sqlalchemy'": ("python -c pass", None),
    "saslnetauth --help": ("python -c pass", 3.0),
    "saslnetauth user show alice": ("python -c pass", 10.0),
    "saslnetauth check alice --rip": ("python -c pass", 10.0),
    "checkpassword floor": ("checkpassword floor", None),
    "checkpassword fast": ("checkpassword floor", 1.2),
}


@dataclass
class Case:
    argv: list[str]
    stdin: bytes = b""
    fd3: bytes = b""


@dataclass
class Side:
    """One checkout: where its commands are and the environment they run with."""

    name: str
    bin: Path
    env: dict[str, str]
    times: dict[str, list[float]] = field(default_factory=dict)
    codes: dict[str, set[int]] = field(default_factory=dict)


def spawn(argv: Sequence[str], env: dict[str, str], stdin: bytes, fd3: bytes) -> tuple[int, float]:
    """Run ``argv`` to its exit with ``stdin`` on fd 0 and ``fd3`` on fd 3; (code, seconds)."""
    fds: list[int] = []
    devnull = os.open(os.devnull, os.O_RDWR)
    fds.append(devnull)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for target, data in ((0, stdin), (3, fd3)):
        r, w = os.pipe()
        os.write(w, data)  # far below a pipe's capacity
        os.close(w)
        fds.append(r)
        actions.append((os.POSIX_SPAWN_DUP2, r, target))
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        for fd in fds:
            os.close(fd)
    return os.waitstatus_to_exitcode(status), elapsed


def make_side(name: str, tree: Path | None) -> Side:
    env = clean_env(SERVICE="smtp", TCPREMOTEIP=RIP, TCPLOCALIP="127.0.0.1", PROTO="TCP")
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env.pop("PYTHONPATH", None)
    if tree is None:
        return Side(name, BIN, env)
    venv = tree / ".venv" / "bin"
    if (venv / "saslnetauth").exists():
        return Side(name, venv, env)
    env["PYTHONPATH"] = str(tree)
    return Side(name, BIN, env)


def compile_package(side: Side) -> None:
    """Write the byte code of the saslnetauth that ``side`` runs."""
    find = "import saslnetauth, os; print(os.path.dirname(saslnetauth.__file__))"
    python = str(side.bin / "python")
    where = subprocess.run(
        [python, "-c", find], env=side.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", where], env=side.env, check=True)


def cases(side: Side, db: str, target: str, floor: Path) -> dict[str, Case]:
    python = str(side.bin / "python")
    sna = [str(side.bin / "saslnetauth"), "--database", db]
    fd3 = f"{USER}\0{PASSWORD}\0\0".encode()
    cp = [str(side.bin / "saslnetauth-checkpassword"), "--socket", target, "/bin/true"]
    return {
        "python -c pass": Case([python, "-c", "pass"]),
        "python -c 'import click'": Case([python, "-c", "import click"]),
        "python -c 'import sqlalchemy'": Case([python, "-c", "import sqlalchemy"]),
        "saslnetauth --help": Case([str(side.bin / "saslnetauth"), "--help"]),
        "saslnetauth user show alice": Case([*sna, "user", "show", USER]),
        "saslnetauth check alice --rip": Case(
            [*sna, "check", USER, "--rip", RIP, "--password-stdin"], stdin=PASSWORD.encode() + b"\n"
        ),
        "checkpassword floor": Case([python, str(floor), "/bin/true"], fd3=fd3),
        "checkpassword fast": Case(cp, fd3=fd3),
    }


def measure(sides: list[Side], table_of: dict[str, dict[str, Case]], runs: int) -> None:
    """``runs`` rounds; each round runs every case on every side, the order alternating."""
    order = [(side, name) for name in TARGETS for side in sides]
    for side, name in order:  # warm the page cache and __pycache__
        c = table_of[side.name][name]
        spawn(c.argv, side.env, c.stdin, c.fd3)
    for i in range(runs):
        for side, name in order if i % 2 == 0 else reversed(order):
            c = table_of[side.name][name]
            code, wall = spawn(c.argv, side.env, c.stdin, c.fd3)
            side.times.setdefault(name, []).append(wall)
            side.codes.setdefault(name, set()).add(code)


def rows(sides: list[Side]) -> tuple[list[list[object]], list[str]]:
    out: list[list[object]] = []
    verdicts: list[str] = []
    for name, (unit, target) in TARGETS.items():
        for side in sides:
            ts = side.times[name]
            med = statistics.median(ts)
            ratio = med / statistics.median(side.times[unit])
            shown = "" if target is None else f"<= {target:g}x"
            met = "" if target is None else ("MET" if ratio <= target else "NOT MET")
            codes = ",".join(map(str, sorted(side.codes[name])))
            out.append([name, side.name, len(ts), codes, ms(min(ts)), ms(med), f"{ratio:.2f}x"])
            out[-1] += [shown, met]
            if target is not None:
                verdicts.append(f"{side.name:8s} {name}: {ratio:.2f}x (target {shown}) {met}")
    return out, verdicts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="runs of each case on each side")
    ap.add_argument("--baseline", type=Path, help="another checkout, measured interleaved")
    ap.add_argument("--quick", action="store_true", help="10 runs")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    runs = 10 if args.quick else args.runs
    banner("CLI and checkpassword start-up vs python -c pass (whole processes)")
    print(f"machine: {machine_summary()}")
    sides = [make_side("this", None)]
    if args.baseline is not None:
        sides.append(make_side("baseline", args.baseline.resolve()))
    for side in sides:
        where = side.env.get("PYTHONPATH") or side.bin.parent.parent
        print(f"{side.name:8s} {where} ({_revision(Path(where))})")
        # byte code up to date first: with PYTHONDONTWRITEBYTECODE (or a read-only
        # tree) a stale .pyc is compiled again at every start, and that is measured
        compile_package(side)
    t0 = time.monotonic()
    with bench_dir("sna-startup-") as tmp:
        user = BenchUser(USER, PASSWORD, "{PLAIN}" + PASSWORD, nets=(f"{RIP}/32",))
        db = make_database(tmp, [user])
        floor = tmp / "floor-checkpassword.py"
        floor.write_text(FLOOR)
        with saslnetauth_server(tmp, db, failure_delay=0.0) as sna:
            table_of = {side.name: cases(side, db, sna.target, floor) for side in sides}
            measure(sides, table_of, runs)
    banner(f"{runs} runs per case and side, interleaved; ratio = median / median of its unit")
    body, verdicts = rows(sides)
    heads = ["case", "tree", "runs", "exit", "min ms", "median ms", "ratio", "target", ""]
    print(table(heads, body))
    print("\nunits: python -c pass (the same side's interpreter); checkpassword fast: the floor")
    print("\n".join(verdicts))
    print(f"took {time.monotonic() - t0:.0f} s; machine after: {machine_summary()}")
    print(f"reproduce: {command_line()}")
    bad = [f"{s.name} {n}" for s in sides for n, c in s.codes.items() if c != {0}]
    if bad:
        print(f"unexpected exit status: {', '.join(bad)}")
    return 1 if bad else 0


def _revision(tree: Path) -> str:
    """The checkout's commit, with "+changes" when its work tree differs from it."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    sys.exit(main())
