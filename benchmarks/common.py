"""Shared plumbing for the benchmark scripts: servers, processes, statistics, tables.

Everything listens and connects on loopback only. Each helper that starts
a process stops it again (context managers), and nothing is left running.
"""

from __future__ import annotations

import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALLOWED_IP = "127.0.0.2"
DENIED_IP = "127.0.0.3"


# -- statistics ---------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3) with the 'inclusive' method."""
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ms(seconds: float) -> str:
    """Milliseconds with a precision that suits the magnitude."""
    value = seconds * 1000
    if value != value:  # NaN
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.0f}"


def rate(per_second: float) -> str:
    if per_second >= 100:
        return f"{per_second:,.0f}"
    return f"{per_second:.1f}"


# -- tables -------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: bool = True) -> str:
    """A plain-text table; numbers right-aligned, the first column left-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        parts = []
        for i, cell in enumerate(row):
            if i == 0 or not right:
                parts.append(cell.ljust(widths[i]))
            else:
                parts.append(cell.rjust(widths[i]))
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def banner(title: str) -> None:
    print()
    print("=" * len(title))
    print(title)
    print("=" * len(title), flush=True)


def command_line() -> str:
    """The command line that ran this script, ready to paste (from the repo root)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *sys.argv[1:]])


# -- processes ----------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes (all their threads), in seconds."""
    from tests.support.net import stat_fields

    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (e.g. serve's decision worker processes)."""
    from tests.support.net import live_processes

    children: dict[int, list[int]] = {}
    for child, fields in live_processes():
        children.setdefault(int(fields[1]), []).append(child)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want``; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    env.update(extra)
    return env


@contextmanager
def bench_dir(prefix: str = "sna-bench-") -> Iterator[Path]:
    """A world-searchable temp dir under /tmp (Dovecot's unprivileged processes reach in)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        path = Path(tmp)
        path.chmod(0o755)
        yield path


# -- saslnetauth --------------------------------------------------------------------


def cli(*args: str, db: str, stdin: str | None = None) -> str:
    """Run the installed ``saslnetauth`` command; raise with its stderr on failure."""
    res = subprocess.run(
        [str(BIN / "saslnetauth"), "--database", db, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"saslnetauth {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res.stdout


@dataclass
class BenchUser:
    """A user as both servers know it. ``hash`` is a Dovecot ``{SCHEME}...`` string;
    ``password`` set and ``hash`` None means: let ``saslnetauth user add`` hash it."""

    name: str
    password: str
    hash: str | None = None
    nets: tuple[str, ...] = (ALLOWED_IP,)
    disabled: bool = False


def make_database(directory: Path, users: Sequence[BenchUser], name: str = "bench.db") -> str:
    """A fresh SQLite database with ``users`` added through the real CLI."""
    url = f"sqlite:///{directory / name}"
    cli("init", db=url)
    for u in users:
        args = ["user", "add", u.name]
        stdin = None
        if u.hash is not None:
            args += ["--hash", u.hash]
        else:
            args += ["--password-stdin"]
            stdin = u.password + "\n"
        for net in u.nets:
            args += ["--net", net]
        if u.disabled:
            args.append("--disabled")
        cli(*args, db=url, stdin=stdin)
    return url


@dataclass
class SaslServer:
    """A running ``saslnetauth serve`` (see :func:`saslnetauth_server`)."""

    proc: subprocess.Popen[bytes]
    socket: Path
    log_path: Path
    config_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def pids(self) -> list[int]:
        """The server process and its decision worker processes (if any)."""
        return process_tree(self.proc.pid)

    def ready_line(self) -> str:
        """The server's own ``ready:`` log line (workers, mode, delays)."""
        for line in self.log().splitlines():
            if "ready:" in line:
                return line.split("ready:", 1)[1].strip()
        return "?"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_config(
    path: Path, db_url: str, serve: dict[str, object] | None = None, extra: str = ""
) -> Path:
    """A TOML config: the database, then ``[serve]`` keys (penalty off by default),
    then ``extra`` (more tables, e.g. ``[report]``)."""
    keys: dict[str, object] = {"penalty_max": 0}
    keys.update(serve or {})
    lines = [f'database_url = "{db_url}"', "", "[serve]"]
    for key, value in keys.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n" + extra)
    # a file holding the policy endpoint's secret must not be readable by others
    path.chmod(0o600 if "api_header" in extra else 0o644)
    return path


@contextmanager
def saslnetauth_server(
    directory: Path,
    db_url: str,
    *,
    failure_delay: float = 0.0,
    serve: dict[str, object] | None = None,
    workers: int | None = None,
    name: str = "serve",
    extra_config: str = "",
) -> Iterator[SaslServer]:
    """Start ``saslnetauth serve`` on a UNIX socket in ``directory``; stop it afterwards."""
    cfg = write_config(directory / f"{name}.toml", db_url, serve, extra_config)
    sock = directory / f"{name}.sock"
    log_path = directory / f"{name}.log"
    argv = [
        str(BIN / "saslnetauth"),
        "--config",
        str(cfg),
        "serve",
        "--listen",
        f"unix:{sock}",
        "--failure-delay",
        str(failure_delay),
    ]
    if workers is not None:
        argv += ["--workers", str(workers)]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=clean_env())
    server = SaslServer(proc, sock, log_path, cfg, argv)
    try:
        deadline = time.monotonic() + 30
        while "ready:" not in server.log():
            if proc.poll() is not None:
                raise RuntimeError(f"saslnetauth serve exited {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"saslnetauth serve not ready after 30 s:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- Dovecot ------------------------------------------------------------------------


def doveadm_pw(scheme: str, password: str, rounds: int | None = None) -> str:
    """A hash made by Dovecot itself: ``doveadm pw -s SCHEME [-r ROUNDS] -p PASSWORD``."""
    cmd = ["doveadm", "pw", "-s", scheme, "-p", password]
    if rounds is not None:
        cmd += ["-r", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return out.strip()


def dovecot_passwd_line(user: BenchUser) -> str:
    """passwd-file line with the same hash and ``allow_nets=`` as the saslnetauth user."""
    assert user.hash is not None and ":" not in user.hash
    return f"{user.name}:{user.hash}::::::allow_nets={','.join(user.nets)}"


#: Added to the harness's Dovecot config for the side-by-side runs (reported verbatim).
DOVECOT_TUNING = """\
# benchmark tuning (benchmarks/common.py DOVECOT_TUNING)
auth_cache_size = 0
service auth {
  client_limit = 4096
}
service auth-worker {
  process_limit = 8
}
"""


def dovecot_pids(master_pid: int | None) -> list[int]:
    """Every process of a private Dovecot (its master's session)."""
    from tests.support.net import session_members

    return session_members(master_pid) if master_pid else []


def dovecot_process_names(master_pid: int | None) -> list[str]:
    names = []
    for pid in dovecot_pids(master_pid):
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return sorted(n.strip() for n in names)


# -- spawning a program with fd 3 (checkpassword) ------------------------------------


def spawn_with_fd3(argv: Sequence[str], data: bytes, env: dict[str, str]) -> tuple[int, float]:
    """fork+exec ``argv`` with ``data`` readable on fd 3; returns (exit code, wall seconds).

    The clock runs from just before posix_spawn to the reaped exit, the way
    Dovecot experiences one checkpassword call. stdout/stderr go to /dev/null.
    """
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
            (os.POSIX_SPAWN_DUP2, r, 3),
        ]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(r)
        os.close(devnull)
    return os.waitstatus_to_exitcode(status), elapsed


def spawn_capture_fd3(
    argv: Sequence[str], data: bytes, env: dict[str, str]
) -> tuple[int, float, bytes]:
    """Like :func:`spawn_with_fd3` but returns stderr too (slower: a pipe is read)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    er, ew = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, ew, 2),
            (os.POSIX_SPAWN_DUP2, r, 3),
        ]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
        os.close(ew)
        ew = -1
        chunks = []
        while chunk := os.read(er, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        for fd in (r, er, devnull, ew):
            if fd >= 0:
                os.close(fd)
    return os.waitstatus_to_exitcode(status), elapsed, b"".join(chunks)


def system_busy_jiffies() -> int:
    """CPU time (all cores, clock ticks) spent busy since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


class CpuMeter:
    """CPU used by the server's processes, by this process, and by everything else.

    ``server_pids`` is a list or a function returning the current list (a
    server's worker processes may be replaced during a run). ``others``
    (the rest of the machine) flags runs disturbed by unrelated load, e.g.
    a test suite running at the same time.
    """

    def __init__(self, server_pids: Sequence[int] | Callable[[], Sequence[int]]) -> None:
        self.pids_fn = server_pids if callable(server_pids) else (lambda: list(server_pids))
        self.t0 = time.perf_counter()
        self.srv0 = {pid: cpu_seconds([pid]) for pid in self.pids_fn()}
        self.self0 = _self_cpu()
        self.sys0 = system_busy_jiffies()

    def stop(self) -> tuple[float, float, float, float]:
        """(wall seconds, server CPU s, own CPU s, others' CPU s)."""
        wall = time.perf_counter() - self.t0
        srv = sum(cpu_seconds([pid]) - self.srv0.get(pid, 0.0) for pid in self.pids_fn())
        own = _self_cpu() - self.self0
        busy = (system_busy_jiffies() - self.sys0) / CLK_TCK
        return wall, srv, own, max(0.0, busy - srv - own)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every context manager stops its servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def machine_summary() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, "
        f"load average {' '.join(load)}"
    )
