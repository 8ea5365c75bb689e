"""Where does ``saslnetauth serve`` spend its time? py-spy under load, plus component costs.

1. Sampling profiles of the running server (py-spy, all threads, not
   pausing the process) while the load generator drives it:
   ``plain``   PLAIN hashes, allowed logins, 20 connections: pure overhead;
   ``plain-gil`` the same, sampling only the thread that holds the GIL
               (what serialises the server when hashes are cheap);
   ``sha512``  SHA512-CRYPT, allowed/denied/wrong mix, 20 connections.
   py-spy follows the decision worker processes too (``--subprocesses``).
   Each profile is summarised by process and thread, by category (the innermost frame that
   belongs to a known area: SQL, hashing, logging, asyncio, protocol...),
   by thread, and as the top functions by self and inclusive samples.
2. Costs of the pieces measured in-process, one call at a time:
   ``engine.decide`` for a PLAIN user, ``store.get_user``,
   ``global_rules``, a log line, the codec, and the asyncio -> thread
   pool -> asyncio hop (``run_in_executor`` of a no-op).
3. Throughput against ``[serve] worker_mode`` (processes, threads) and
   ``--workers N`` for PLAIN and SHA512-CRYPT allowed logins, 20
   connections, a few seconds each; CPU of the main process and its
   worker processes together.

py-spy is a developer tool, not a dependency: ``.venv/bin/pip install
py-spy`` (without it, part 1 is skipped).

Usage::

    .venv/bin/python benchmarks/profile_serve.py [--seconds 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    BIN,
    DENIED_IP,
    BenchUser,
    CpuMeter,
    banner,
    bench_dir,
    command_line,
    doveadm_pw,
    exit_on_sigterm,
    machine_summary,
    make_database,
    ms,
    process_tree,
    rate,
    saslnetauth_server,
    table,
)
from benchmarks.loadgen import Login, print_summary, run_load
from saslnetauth.policy.login import Login as EngineLogin

#: (category, substring of a frame) - the innermost frame that matches decides.
CATEGORIES: list[tuple[str, str]] = [
    ("hash: libcrypt/argon2/bcrypt", "saslnetauth/passwords.py"),
    ("SQL: SQLAlchemy + sqlite3", "sqlalchemy/"),
    ("SQL: SQLAlchemy + sqlite3", "sqlite3/"),
    ("SQL: store code", "saslnetauth/store/"),
    ("logging", "logging/"),
    ("logging", "saslnetauth/logfmt.py"),
    ("network rules", "saslnetauth/policy/rules/netrules.py"),
    ("engine", "saslnetauth/policy/engine.py"),
    ("penalty/alerts", "saslnetauth/penalty.py"),
    ("protocol codec + SASL", "saslnetauth/protocol.py"),
    ("protocol codec + SASL", "saslnetauth/sasl.py"),
    ("server (asyncio side)", "saslnetauth/server.py"),
    ("worker IPC, or idle in recv (workers.py)", "saslnetauth/workers.py"),
    ("thread pool hop", "concurrent/futures/"),
    ("thread pool hop", "threading.py"),
    ("thread pool hop", "queue.py"),
    ("asyncio event loop + streams", "asyncio/"),
    ("asyncio event loop + streams", "selectors.py"),
]


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marker in CATEGORIES:
            if marker in frame:
                return name
    return "other: " + (frames[-1].split(" (")[0] if frames else "?")


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``"""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def split_stack(stack: str) -> list[str]:
    """Split a raw py-spy stack on ``;`` but keep ``process N:"cmdline"`` frames whole
    (a command line such as ``-c "...; spawn_main(...)"`` contains ``;``)."""
    frames: list[str] = []
    pending = ""
    for piece in stack.split(";"):
        if pending:
            pending += ";" + piece
            if piece.endswith('"'):
                frames.append(pending)
                pending = ""
        elif piece.startswith("process ") and not piece.endswith('"'):
            pending = piece
        else:
            frames.append(piece)
    if pending:
        frames.append(pending)
    return frames


def owner(frames: list[str], main_pid: int) -> tuple[str, list[str]]:
    """Strip the leading ``process ...`` and ``thread ...`` frames; name who ran the stack."""
    proc = "main process"
    while frames and frames[0].startswith("process "):
        pid = frames[0][8:].split(":", 1)[0]
        if pid.isdigit() and int(pid) != main_pid:
            proc = "tracker" if "resource_tracker" in frames[0] else "worker processes"
        frames = frames[1:]
    thread = ""
    if frames and frames[0].startswith("thread ("):
        name = frames[0].split(": ", 1)[-1] if ": " in frames[0] else "?"
        thread = "worker threads" if "verify" in name or "decide" in name else name
        frames = frames[1:]
    return f"{proc}: {thread}" if thread else proc, frames


def summarise(raw: str, title: str, main_pid: int, top: int = 15) -> None:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((split_stack(stack), int(count)))
    total = sum(c for _, c in stacks) or 1
    threads: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for stack, count in stacks:
        who, frames = owner(stack, main_pid)
        threads[who] += count
        cats[categorise(frames)] += count
        if frames:
            selfs[short(frames[-1])] += count
        for f in {short(f) for f in frames}:
            incl[f] += count
    banner(f"py-spy: {title} ({total} samples)")
    print(table(["process: thread", "samples", "%"], _pct(threads, total)))
    print()
    print(table(["category (innermost known frame)", "samples", "%"], _pct(cats, total)))
    print()
    print(table(["top self (leaf) frames", "samples", "%"], _pct(selfs, total, top)))
    print()
    print(table(["top inclusive frames", "samples", "%"], _pct(incl, total, top + 10)))


def _pct(counter: Counter[str], total: int, top: int | None = None) -> list[list[object]]:
    return [[k, v, f"{v / total * 100:.1f}"] for k, v in counter.most_common(top)]


def profile_run(
    tmp: Path,
    target: str,
    pid: int,
    logins: list[Login],
    seconds: float,
    name: str,
    extra: list[str],
    keep: Path | None,
) -> str:
    out = tmp / f"{name}.txt"
    spy = subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--subprocesses",
            "--output",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(0.5)
        meter = CpuMeter(lambda: process_tree(pid))
        res = asyncio.run(run_load(target, logins, connections=20, seconds=seconds - 1.0))
        cpu = meter.stop()[1]
        spy.communicate(timeout=120)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    banner(f"load during profile '{name}'")
    print_summary(res)
    print(
        f"server CPU {cpu / res.elapsed * 100:.0f}% of one core, "
        f"{cpu / max(1, res.completed) * 1000:.3f} ms per login (profiler overhead included)"
    )
    raw = out.read_text() if out.exists() else ""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, keep / out.name)
    return raw


def per_call(fn: Callable[[], object], n: int) -> float:
    """Median of 5 passes of the mean time per call, microseconds."""
    passes = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        passes.append((time.perf_counter() - t0) / n)
    return statistics.median(passes) * 1e6


def components(db: str, user: BenchUser, tmp: Path) -> list[list[object]]:
    """In-process costs of the pieces of one login (errors reported, not raised)."""
    from saslnetauth.config import load_config
    from saslnetauth.dovecot.protocol import ServerCodec, format_ok
    from saslnetauth.runtime import make_engine, open_store, setup_logging

    cfg = load_config(None, db)
    with open(tmp / "component.log", "w") as logf:
        setup_logging(cfg, stream=logf)
        store = open_store(cfg)
        engine = make_engine(cfg, store)
        rows: list[list[object]] = []

        def add(label: str, fn: Callable[[], object], n: int = 2000) -> None:
            try:
                fn()
                rows.append([label, f"{per_call(fn, n):.1f}"])
            except Exception as exc:  # the package changes under us: report, go on
                rows.append([label, f"n/a ({type(exc).__name__}: {exc})"])

        pw = user.password.encode()
        add(
            "engine.decide (PLAIN, allowed, logs a line)",
            lambda: engine.decide(EngineLogin.of(user.name, pw, ALLOWED_IP, "smtp")),
        )
        add(
            "engine.decide quiet=True (no log line)",
            lambda: engine.decide(EngineLogin.of(user.name, pw, ALLOWED_IP, "smtp"), quiet=True),
        )
        add("store.get_user", lambda: store.get_user(user.name))
        add("store.global_rules (cached)", store.global_rules, 20000)
        add("hasher.parse + verify ({PLAIN})", lambda: engine.hasher.verify(pw, user.hash or ""))
        log = logging.getLogger("saslnetauth.auth")
        add("one INFO log line (to a file)", lambda: log.info("%s", "auth ok: user=x"))
        ok_line = (
            b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.2\tresp=AGEAYg==\n"
        )

        def codec() -> object:
            c = ServerCodec()
            c.receive_data(b"VERSION\t1\t2\n")
            return c.receive_data(ok_line), format_ok(1, "alice")

        add("codec: VERSION + AUTH line parsed, OK formatted", codec, 20000)

        async def hops(n: int) -> float:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(4) as pool:
                t0 = time.perf_counter()
                for _ in range(n):
                    await loop.run_in_executor(pool, int)
                return (time.perf_counter() - t0) / n * 1e6

        rows.append(
            ["asyncio -> thread pool -> asyncio hop (no-op)", f"{asyncio.run(hops(5000)):.1f}"]
        )
        store.close()
    return rows


def workers_sweep(
    tmp: Path, db: str, users: list[BenchUser], counts: str, modes: str, seconds: float
) -> list[list[object]]:
    """Throughput per ``[serve] worker_mode`` and ``--workers N``."""
    rows: list[list[object]] = []
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        for n in [int(c) for c in counts.split(",") if c.strip()]:
            with saslnetauth_server(
                tmp,
                db,
                failure_delay=0.0,
                workers=n,
                serve={"penalty_max": 0, "worker_mode": mode},
                name=f"{mode}{n}",
            ) as sna:
                for user in users:
                    login = [Login(user.name, user.password, ALLOWED_IP, True)]
                    asyncio.run(run_load(sna.target, login, connections=20, requests=40))
                    meter = CpuMeter(sna.pids)
                    res = asyncio.run(run_load(sna.target, login, connections=20, seconds=seconds))
                    wall, srv, _own, others = meter.stop()
                    scheme = (user.hash or "?").split("}")[0].lstrip("{")
                    rows.append(
                        [
                            mode,
                            n,
                            scheme,
                            rate(res.throughput),
                            ms(res.p50),
                            res.error_count,
                            f"{srv / wall * 100:.0f}",
                            f"{srv / max(1, res.completed) * 1000:.3f}",
                            f"{others / wall * 100:.0f}",
                        ]
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per profile")
    ap.add_argument("--keep", type=Path, help="copy the raw py-spy stacks here")
    ap.add_argument("--workers", default="1,2,4", help="worker counts to sweep ('' = skip)")
    ap.add_argument("--modes", default="processes,threads", help="[serve] worker_mode values")
    ap.add_argument("--sweep-seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    banner("Profile of saslnetauth serve")
    print(f"machine: {machine_summary()}")
    have_spy = (BIN / "py-spy").exists()
    with bench_dir("sna-prof-") as tmp:
        plain = BenchUser("plainuser", "plain-pw", "{PLAIN}plain-pw")
        sha = BenchUser("shauser", "sha-pw", doveadm_pw("SHA512-CRYPT", "sha-pw"))
        db = make_database(tmp, [plain, sha])
        if not have_spy:
            print("py-spy not installed: .venv/bin/pip install py-spy (profiles skipped)")
        else:
            with saslnetauth_server(tmp, db, failure_delay=0.0) as sna:
                runs = [
                    ("plain", [Login(plain.name, plain.password, ALLOWED_IP, True)], []),
                    ("plain-gil", [Login(plain.name, plain.password, ALLOWED_IP, True)], ["--gil"]),
                    (
                        "sha512",
                        [
                            Login(sha.name, sha.password, ALLOWED_IP, True),
                            Login(sha.name, sha.password, DENIED_IP, False),
                            Login(sha.name, "wrong", ALLOWED_IP, False),
                        ],
                        [],
                    ),
                ]
                for name, logins, extra in runs:
                    raw = profile_run(
                        tmp, sna.target, sna.pid, logins, args.seconds, name, extra, args.keep
                    )
                    summarise(raw, name, sna.pid)
        if args.workers:
            banner("serve --workers N, worker_mode: throughput, 20 connections, allowed logins")
            rows = workers_sweep(
                tmp, db, [plain, sha], args.workers, args.modes, args.sweep_seconds
            )
            headers = ["mode", "workers", "scheme", "req/s", "p50 ms", "errors"]
            headers += ["srv CPU %", "srv ms/login", "others %"]
            print(table(headers, rows))
        banner("Component costs, in-process, one call at a time")
        buf = io.StringIO()
        rows = components(db, plain, tmp)
        print(table(["piece", "us per call"], rows), file=buf)
        print(buf.getvalue())
    print(f"reproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
