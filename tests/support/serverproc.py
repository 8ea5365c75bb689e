"""Run the real ``saslnetauth serve`` as a subprocess, and a scripted auth client."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A running ``saslnetauth serve`` with its log file."""

    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, unix: str | None, port: int | None
    ):
        self.proc = proc
        self.log_path = log_path
        self.unix = unix
        self.port = port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited ({self.proc.returncode}) before {needle!r}:\n{text}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in server log after {timeout}s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def connect(self, source: str | None = None) -> AuthClient:
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.unix)
        else:
            assert self.port is not None
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.settimeout(15)
        return AuthClient(s)


@contextmanager
def run_server(
    db_url: str,
    *,
    args: Sequence[str] = (),
    tcp: bool = False,
    unix: bool = True,
    failure_delay: float = 0.0,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
    nofile: int | None = None,
    ready_timeout: float = 60,
    wrap: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """``nofile``: run the server with RLIMIT_NOFILE (soft and hard) set to it. ``wrap``:
    a command that execs the server (``nsenter --net=...``: the process keeps its pid)."""
    with tempfile.TemporaryDirectory(prefix="sna-serve-") as tmp:
        base = Path(workdir or tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - peers running as other users must reach the socket
        sock = str(base / "auth-client") if unix else None
        port = free_port() if tcp else None
        cmd = [*wrap, str(BIN / "saslnetauth"), "--database", db_url]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += ["serve", "--failure-delay", str(failure_delay)]
        if sock:
            cmd += ["--listen", f"unix:{sock}"]
        if port:
            cmd += ["--listen", f"inet:127.0.0.1:{port}"]
        cmd += list(args)
        log_path = base / "serve.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
        full_env.update(env or {})
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=full_env,
                preexec_fn=None if nofile is None else _limit_nofile(nofile),
            )
        server = ServerProcess(proc, log_path, sock, port)
        try:
            # a start under load (two shared cores) can take well over 10 s: the measured
            # slowest hash and the workers' imports; wait_log fails at once if it exits
            server.wait_log("ready:", timeout=ready_timeout)
            yield server
        finally:
            server.stop()


def _limit_nofile(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


class AuthClient:
    """A scripted client of the Dovecot auth protocol (raw lines, for transcripts)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; partial: {self.buf!r}")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode()

    def handshake(self) -> list[str]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line == "DONE":
                break
        self.send("VERSION\t1\t2\nCPID\t4242\n")
        return lines

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def plain(
        self,
        req_id: int,
        user: str,
        password: str,
        rip: str | None = "127.0.0.2",
        service: str = "smtp",
        authzid: str = "",
        real_rip: str | None = None,
    ) -> None:
        resp = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        rip_part = f"\trip={rip}" if rip is not None else ""
        if real_rip is not None:  # Dovecot's login_trusted_networks (docs/webmail.md)
            rip_part += f"\treal_rip={real_rip}"
        self.send(
            f"AUTH\t{req_id}\tPLAIN\tservice={service}\tnologin\tlip=127.0.0.1{rip_part}\tresp={resp}\n"
        )

    def login_plain(self, user: str, password: str, **kw: object) -> str:
        """One PLAIN login on a fresh request id; returns the reply line."""
        self._next = getattr(self, "_next", 0) + 1
        self.plain(self._next, user, password, **kw)  # type: ignore[arg-type]
        return self.line()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


NOBODY = 65534
#: Run as another user: connect COUNT times to the socket (a path, HOST:PORT or
#: [IPv6]:PORT), report per connection
#: whether the server greeted ("handshake") or closed it first ("closed"), then keep
#: the connections open (silent) for HOLD seconds. Standard library only.
_CLIENT = r"""
import socket, sys, time
path, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(count):
    if path.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
    else:
        host, port = path.rsplit(":", 1)
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.connect((host.strip("[]"), int(port)))
    s.settimeout(3)
    try:
        data = s.recv(64)
    except TimeoutError:
        data = b"?"
    print("handshake" if data.startswith(b"VERSION") else "closed" if not data else "silent")
    socks.append(s)
sys.stdout.flush()
time.sleep(hold)
"""


def _run_as(uid: int, script: str, *args: str) -> subprocess.Popen[str]:
    """The stdlib-only Python ``script`` with ``args``, run by ``uid`` (setpriv drops
    every group too); its standard output is a pipe."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        from tests.support.peers import missing

        missing("root and setpriv (util-linux), to connect as another user")
    assert setpriv is not None
    cmd = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3"]
    return subprocess.Popen([*cmd, "-c", script, *args], stdout=subprocess.PIPE, text=True, cwd="/")


def run_script_as(user: str, script: str, *args: str, timeout: float = 30) -> tuple[int, str]:
    """The stdlib-only ``script`` run to its end by ``user``: (exit status, its output)."""
    import pwd

    proc = _run_as(pwd.getpwnam(user).pw_uid, script, *args)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out


def as_user(uid: int, target: str, count: int = 1, hold: float = 0) -> subprocess.Popen[str]:
    """The client above, run by ``uid``."""
    return _run_as(uid, _CLIENT, target, str(count), str(hold))


#: Run as another user: keep COUNT idle TCP connections to HOST:PORT (never a byte
#: sent) for SECONDS, opening a new one whenever the server closes one; print
#: "holding" once the first COUNT connections are open. Standard library only.
_HOLDER = r"""
import selectors, socket, sys, time
host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
def add():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
for _ in range(count):
    add()
print("holding", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for key, _ in sel.select(0.2):
        try:
            data = key.fileobj.recv(1)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
    while len(sel.get_map()) < count and time.monotonic() < end:
        add()
"""


def hold_tcp(uid: int, port: int, count: int, seconds: float) -> subprocess.Popen[str]:
    """The holder above, run by ``uid``, on 127.0.0.1:``port``."""
    return _run_as(uid, _HOLDER, "127.0.0.1", str(port), str(count), str(seconds))


def results(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    return [proc.stdout.readline().strip() for _ in range(count)]
