"""The policy servers ``sending.py`` compares, each started privately on loopback.

- ``saslnetauth serve`` with ``[sending] listen`` on a TCP port, a temporary
  SQLite database, embedded state or Redis at 127.0.0.1:6379 under a prefix of
  its own (its keys are deleted afterwards);
- Debian's ``policyd-rate-limit`` (a temporary YAML config through ``--file``,
  SQLite backend, a TCP port);
- Debian's ``postfwd`` (``postfwd2``: its policy children and its cache daemon
  on free TCP ports; rate counters need the cache daemon, which only runs in
  daemon mode, so this process becomes the child subreaper that collects it).

Every target holds the same limits: one user (``RACER``) with ``limit``
messages per hour, everybody else practically unlimited (10^9), so that the
throughput runs go through the counting path without deferrals.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import BIN, cli, process_tree, saslnetauth_server, stop_process
from tests.support.serverproc import free_port

RACER = "racer"
HIGH = 1_000_000_000
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Target:
    name: str
    ports: list[int]
    pids: list[int] = field(default_factory=list)
    note: str = ""


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 30
) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout} s")


def saslnetauth_has_sending() -> bool:
    """Whether the installed saslnetauth (this venv's, not the checkout) has ``[sending]``."""
    res = subprocess.run(
        [str(BIN / "python"), "-c", "import saslnetauth.sending.server"],
        cwd="/",
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    return res.returncode == 0


def _sending_config(port: int, state_url: str, prefix: str) -> str:
    keys = "\n".join(
        f"{k} = {HIGH}"
        for k in (
            "messages_per_hour",
            "recipients_per_hour",
            "messages_per_day",
            "recipients_per_day",
        )
    )
    return (
        f'\n[sending]\nlisten = "inet:127.0.0.1:{port}"\n{keys}\nsuspend_after = 0\n'
        f'\n[state]\nurl = "{state_url}"\nprefix = "{prefix}"\n'
    )


def saslnetauth_database(directory: Path, limit: int, users: Sequence[str] = ()) -> str:
    """A SQLite database with ``users`` (the senders: they logged in through
    saslnetauth, so they are in its database), the racer and its limit (the counters
    are not in it: one database serves every saslnetauth target of a run)."""
    db = f"sqlite:///{directory / 'sending.db'}"
    cli("init", db=db)
    if users:
        lines = "".join(f"{name}:{{PLAIN}}x-{name}\n" for name in users)
        cli("import", "passwd-file", "-", db=db, stdin=lines)
    cli("user", "add", RACER, "--hash", "{PLAIN}x-racer", "--net", "127.0.0.2", db=db)
    cli("user", "set", RACER, "--messages-per-hour", str(limit), db=db)
    return db


@contextlib.contextmanager
def saslnetauth(tmp: Path, db: str, state_url: str = "", servers: int = 1) -> Iterator[Target]:
    """``servers`` instances of ``saslnetauth serve`` on the database ``db`` (and, with
    ``state_url``, one Redis)."""
    prefix = f"sendbench-{os.getpid()}-{time.time_ns()}:"
    label = "redis" if state_url else "embedded"
    target = Target(f"saslnetauth ({label}{', 2 servers' if servers > 1 else ''})", [])
    with contextlib.ExitStack() as stack:
        for i in range(servers):
            port = free_port()
            server = stack.enter_context(
                saslnetauth_server(
                    tmp,
                    db,
                    name=f"serve{i}",
                    extra_config=_sending_config(port, state_url, prefix),
                )
            )
            wait_port(port, server.proc, "saslnetauth serve [sending]")
            target.ports.append(port)
            target.pids.extend(server.pids())
        try:
            yield target
        finally:
            if state_url:
                _redis_delete(prefix)


def _redis_delete(prefix: str) -> None:
    if shutil.which("redis-cli") is None:
        return
    keys = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern", prefix + "*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "DEL", *keys[i : i + 500]],
            capture_output=True,
            check=False,
        )


PRL_YAML = """debug: False
user: "policyd-rate-limit"
group: "policyd-rate-limit"
pidfile: "{dir}/run/policyd-rate-limit.pid"
sqlite_config:
    database: "{dir}/db/policyd-rate-limit.sqlite3"
backend: 0
SOCKET: ["127.0.0.1", {port}]
limits:
    - [{high}, 3600]
limits_by_id:
    {racer}: [[{limit}, 3600]]
limit_by_sasl: True
limit_by_sender: False
limit_by_ip: False
limited_networks: []
success_action: "dunno"
fail_action: "450 4.7.1 over the limit, try again later"
db_error_action: "dunno"
report: False
delay_to_close: 300
"""


@contextlib.contextmanager
def policyd_rate_limit(tmp: Path, limit: int) -> Iterator[Target]:
    """Debian's policyd-rate-limit 1.0 (counts RCPT requests: one per recipient)."""
    home = tmp / "prl"
    home.mkdir()
    shutil.chown(home, "policyd-rate-limit", "policyd-rate-limit")
    port = free_port()
    conf = home / "policyd-rate-limit.yaml"
    conf.write_text(PRL_YAML.format(dir=home, port=port, high=HIGH, racer=RACER, limit=limit))
    with open(home / "log", "wb") as log:
        proc = subprocess.Popen(["policyd-rate-limit", "--file", str(conf)], stdout=log, stderr=log)
    try:
        wait_port(port, proc, "policyd-rate-limit")
        yield Target("policyd-rate-limit", [port], [proc.pid], "SQLite on " + _fs(home))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # its systemd unit's KillSignal
        stop_process(proc)


def _fs(path: Path) -> str:
    out = subprocess.run(
        ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False
    )
    return out.stdout.split()[-1] if out.stdout else "?"


def postfwd_rules(limit: int) -> str:
    return (
        f"id=RACE; protocol_state==END-OF-MESSAGE; sasl_username=={RACER}; "
        f"action=rate(sasl_username/{limit}/3600/450 4.7.1 over the limit, try again later)\n"
        "id=ALL; protocol_state==END-OF-MESSAGE; sasl_username=~.; "
        f"action=rate(sasl_username/{HIGH}/3600/450 4.7.1 over the limit, try again later)\n"
    )


@contextlib.contextmanager
def postfwd(tmp: Path, limit: int, max_servers: int = 250) -> Iterator[Target]:
    """Debian's postfwd2 (prefork children + a cache daemon holding the rate counters)."""
    home = tmp / "postfwd"
    home.mkdir()
    shutil.chown(home, "postfw", "postfw")
    (home / "postfwd.cf").write_text(postfwd_rules(limit))
    port = cache_port = free_port()
    while cache_port == port:  # a cache daemon that cannot bind leaves every child hanging
        cache_port = free_port()
    pidfile = home / "postfwd2.pid"
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    argv = [
        "postfwd2",
        "--daemon",
        "--file",
        str(home / "postfwd.cf"),
        "--interface",
        "127.0.0.1",
        "--port",
        str(port),
        "--cache_socket",
        f"tcp:127.0.0.1:{cache_port}",
        "--pidfile",
        str(pidfile),
        "--user",
        "postfw",
        "--group",
        "postfw",
        "--nodns",
        "--norulelog",
        "--noidlestats",
        "--max_spare_servers",
        "100",
        "--max_servers",
        str(max_servers),
    ]  # fmt: skip (a --min_servers above the default 10 left postfwd 1.35 without children)
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    master = 0
    try:
        deadline = time.monotonic() + 20
        while not master and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                master = int(pidfile.read_text().strip())
            time.sleep(0.05)
        wait_port(port, None, "postfwd2")
        yield Target(
            "postfwd", [port], process_tree(master) if master else [], "postfwd2, fixed windows"
        )
    finally:
        _stop_tree(master)


def _stop_tree(master: int) -> None:
    pids = process_tree(master) if master else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _reap()
        if not any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids):
            break
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    _reap()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
