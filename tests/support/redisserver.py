"""A private ``redis-server`` for a test that stops and starts it (the shared one on
127.0.0.1:6379 is never touched): its own port, no persistence."""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.support.peers import missing, port_open


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:``port``, empty, once it accepts connections."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [str(binary), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Killed at once (a crash, not a clean shutdown)."""
    proc.kill()
    proc.wait()
