"""A private Redis or Valkey server for one test (nothing kept on disk).

``SASLNETAUTH_TEST_REDIS_SERVER`` names the server program (default
``redis-server``, Debian 12's Redis 7); the Debian 13 tier sets it to
``valkey-server`` (Debian 13's Valkey 8, tests/peers/test_debian13_python.py),
and then the tests that would use the shared Redis on 127.0.0.1:6379 get a
private server of that program instead (:func:`private_redis`). A missing
program is a missing peer: a skip locally, a failure in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.peers import missing, port_open
from tests.support.serverproc import free_port

ENV = "SASLNETAUTH_TEST_REDIS_SERVER"
SBIN = "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"


def chosen() -> str | None:
    """The program ``SASLNETAUTH_TEST_REDIS_SERVER`` names, if set."""
    return os.environ.get(ENV) or None


def server_binary() -> str:
    name = chosen() or "redis-server"
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), SBIN]))
    if found is None:
        missing(f"program {name} (a private Redis or Valkey server)")
    assert found is not None
    return found


def start_redis(port: int, bind: Sequence[str] = ("127.0.0.1",)) -> subprocess.Popen[bytes]:
    """The server on ``port`` of every address in ``bind``, listening when this returns."""
    args = ["--port", str(port), "--bind", *bind, "--protected-mode", "no"]
    proc = subprocess.Popen(
        [server_binary(), *args, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open(bind[0], port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{server_binary()} did not start on {bind[0]}:{port}")
        time.sleep(0.05)
    return proc


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"


@contextmanager
def private_redis(bind: Sequence[str] = ("127.0.0.1",)) -> Iterator[RedisServer]:
    """A private server on a free port, killed afterwards."""
    proc = start_redis(port := free_port(), bind)
    try:
        yield RedisServer(proc, port)
    finally:
        proc.kill()
        proc.wait()


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Killed at once (a crash, not a clean shutdown)."""
    proc.kill()
    proc.wait()
