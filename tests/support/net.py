"""Loopback networking, waiting, temp directories and process clean-up for real peers.

Every 127.0.0.0/8 address is local on Linux, so a client can log in "from"
127.0.0.2 (the allowed network in the tests) or 127.0.0.3 (a foreign network)
by binding its socket to that source address (docs/protocols.md section 4).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from tests.support.peers import missing

T = TypeVar("T")

ALLOWED_IP = "127.0.0.2"
"""Source address the tests treat as a user's allowed network."""
DENIED_IP = "127.0.0.3"
"""Source address the tests treat as a foreign network."""
IPV6_IP = "::1"
SOURCE_ADDRESSES = (ALLOWED_IP, DENIED_IP, IPV6_IP)


class PeerError(RuntimeError):
    """A peer did something the harness cannot read as a verdict (crash, bad config, no reply).

    Kept apart from a login failure on purpose: a test expecting "denied" must
    not pass because the peer could not be reached at all.
    """


def is_ipv6(ip: str) -> bool:
    return ":" in ip


def loopback_for(source_ip: str) -> str:
    """The server address a client bound to ``source_ip`` connects to."""
    return "::1" if is_ipv6(source_ip) else "127.0.0.1"


def source_address_usable(ip: str) -> bool:
    """Can a socket be bound to ``ip`` (port 0) on this machine?"""
    family = socket.AF_INET6 if is_ipv6(ip) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def ipv6_loopback_usable() -> bool:
    return source_address_usable("::1")


def require_source_addresses(*ips: str) -> None:
    """Skip (locally) or fail (CI) unless every source address is usable."""
    for ip in ips or SOURCE_ADDRESSES:
        if not source_address_usable(ip):
            missing(f"loopback source address {ip} (cannot bind to it)")


def require_root() -> None:
    if os.geteuid() != 0:
        missing("root privileges (private Postfix/Dovecot/Exim instances run as root)")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 and, when usable, on ::1."""
    want_v6 = ipv6_loopback_usable()
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = int(s4.getsockname()[1])
            if not want_v6:
                return port
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise PeerError("no TCP port free on both 127.0.0.1 and ::1")


def _proc_net_hex(host: str) -> str:
    """An address as /proc/net/tcp{,6} prints it (32-bit words in host byte order)."""
    packed = socket.inet_pton(socket.AF_INET6 if is_ipv6(host) else socket.AF_INET, host)
    words = [packed[i : i + 4][::-1] for i in range(0, len(packed), 4)]
    return b"".join(words).hex().upper()


def tcp_listening(host: str, port: int, pid: int | None = None) -> bool:
    """Is something listening on ``host:port`` (or the wildcard address)?

    Read from /proc/net/tcp{,6} instead of connecting: a probe connection
    would make Postfix start an smtpd, which dies (and gets throttled by the
    master) when the auth server is not up yet. ``pid``: in the network
    namespace of that process (/proc/PID/net/).
    """
    net = "/proc/net" if pid is None else f"/proc/{pid}/net"
    table = f"{net}/tcp6" if is_ipv6(host) else f"{net}/tcp"
    wanted = {_proc_net_hex(host), _proc_net_hex("::" if is_ipv6(host) else "0.0.0.0")}
    try:
        rows = Path(table).read_text().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        addr, _, hexport = fields[1].partition(":")
        if fields[3] == "0A" and int(hexport, 16) == port and addr in wanted:
            return True
    return False


def unix_listening(path: str | Path) -> bool:
    """Is a UNIX stream socket listening at ``path``? (from /proc/net/unix, no connection)"""
    want = str(path)
    try:
        rows = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split(maxsplit=7)
        # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 = listening
        if len(fields) == 8 and fields[7] == want and int(fields[3], 16) & 0x10000:
            return True
    return False


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    The timeout is a readiness deadline for a peer, not an assertion about
    speed: it raises :class:`TimeoutError` naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float = 10.0, pid: int | None = None) -> None:
    """Wait until ``host:port`` is listening (without connecting to it); ``pid``: in the
    network namespace of that process."""
    wait_for(lambda: tcp_listening(host, port, pid), timeout, what=f"{host}:{port} to listen")


def wait_unix(path: str | Path, timeout: float = 10.0) -> None:
    """Wait until a UNIX socket listens at ``path`` (without connecting to it)."""
    wait_for(lambda: unix_listening(path), timeout, what=f"UNIX socket {path} to listen")


def wait_file_match(
    path: Path, pattern: str | re.Pattern[str], timeout: float = 10.0, since: int = 0
) -> re.Match[str]:
    """Wait until the text of ``path`` after offset ``since`` matches ``pattern``.

    ``since`` is a character offset such as ``len(text)`` taken before the
    action whose log line is expected, so that older lines cannot match.
    """
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern

    def probe() -> re.Match[str] | None:
        try:
            return rx.search(path.read_text(errors="replace")[since:])
        except FileNotFoundError:
            return None

    return wait_for(probe, timeout, what=f"{rx.pattern!r} in {path}")


def check_searchable(path: Path) -> None:
    """Raise :class:`PeerError` unless ``path`` and all its parents are world-searchable.

    Postfix's and Dovecot's unprivileged processes (postfix, dovenull, nobody)
    and Exim's host-check (Debian-exim) must reach files and sockets in there.
    pytest's own ``tmp_path`` lives under a 0700 directory, so use
    :func:`peer_tmpdir` instead.
    """
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            raise PeerError(
                f"{p} is not world-searchable; peers running as other users cannot reach "
                f"{path} (use tests.support.peer_tmpdir())"
            )


def make_peer_dir(path: Path) -> Path:
    """Create ``path`` (0755) if needed and check that peers can reach it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    check_searchable(path)
    return path


@contextmanager
def peer_tmpdir(prefix: str = "sna-peer-") -> Iterator[Path]:
    """A fresh world-searchable (0755) directory under /tmp, removed afterwards.

    Short on purpose: UNIX socket paths are limited to 107 bytes.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        path.chmod(0o755)
        check_searchable(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp,
    session, ...), or None when the process is gone. The command name may contain
    spaces and parentheses, so the fields start after its last ")"."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def live_processes() -> Iterator[tuple[int, list[str]]]:
    """``(pid, stat_fields)`` of every process that has not exited. Zombies (state Z)
    have exited already (only their parent or init can reap them) and are left out."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields is not None and fields[0] != "Z":
                yield int(entry), fields


def session_members(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes whose session id is ``sid``.

    Postfix's and Dovecot's masters call setsid(), so a master's pid is the
    session id of every process it started: this finds leftovers precisely,
    without matching process names (other instances may be running).
    """
    return [pid for pid, fields in live_processes() if len(fields) > 3 and int(fields[3]) == sid]


def reap_session(sid: int, grace: float = 5.0) -> list[int]:
    """Wait up to ``grace`` s for session ``sid`` to end, then SIGTERM/SIGKILL what is left.

    Returns the pids that had to be killed (empty when the peer stopped cleanly).
    """
    if sid <= 1:
        return []
    with suppress(TimeoutError):
        wait_for(lambda: not session_members(sid), grace, what=f"session {sid} to exit")
        return []
    killed = session_members(sid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(sid):
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        with suppress(TimeoutError):
            wait_for(lambda: not session_members(sid), 2.0, what=f"session {sid} to die")
            break
    return killed


def run_daemon_command(cmd: Sequence[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run a command that starts a daemon; returns (exit code, stdout+stderr).

    Output goes through a temp file, not a pipe: a daemon that keeps the
    inherited stdout/stderr open would make a pipe reader wait forever.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        res = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=False,
            timeout=timeout,
        )
        out.seek(0)
        return res.returncode, out.read()


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
