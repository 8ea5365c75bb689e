"""A second host for the tests: a network namespace joined to ours by a veth pair.

A client socket made in it has no socket on the server's machine (its network
namespace is another), so the server sees a remote TCP peer (one with
``allow_remote_listen``), known by its address alone: the peers to which the
per-peer share and ``max_connections`` still apply (issue 21, items 4 and 6).
Needs root, ``ip`` (iproute2) and ``nsenter``; a missing one is a missing peer
(skipped locally, a failure in CI).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_SEQ = itertools.count()  # names of one process's hosts never meet (a test may make several)


@dataclass(frozen=True)
class RemoteHost:
    name: str
    local: str  # our end's address (the server listens there)
    address: str  # the other host's address

    def connect(self, port: int, timeout: float = 15) -> socket.socket:
        """A TCP connection from the other host to ``local:port``: the socket is
        made in a thread that joined the namespace (a socket keeps its namespace)."""
        box: list[socket.socket | BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                box.append(socket.create_connection((self.local, port), timeout=timeout))
            except BaseException as exc:  # handed to the caller
                box.append(exc)

        t = threading.Thread(target=inside)
        t.start()
        t.join()
        got = box[0]
        if isinstance(got, BaseException):
            raise got
        return got


def _ip(*args: str, netns: str | None = None) -> None:
    """``ip ARGS``, in network namespace ``netns`` if given: entered with nsenter, not
    ``ip -n``, which remounts / as a slave and fails where / is no mount point (the
    Debian 13 chroot: "mount --make-rslave /" failed: Invalid argument)."""
    enter = [] if netns is None else ["nsenter", f"--net=/run/netns/{netns}"]
    subprocess.run([*enter, "ip", *args], check=True, capture_output=True)


@contextmanager
def remote_host() -> Iterator[RemoteHost]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        from tests.support.peers import missing

        missing("root, ip (iproute2) and nsenter, to make a second network namespace")
    # names of at most 15 characters (interfaces); a /30 of the benchmarking range
    # 198.18.0.0/15, unlikely to be the one of a test running at the same time
    tag = f"{os.getpid() % 100000}x{next(_SEQ) % 1000}{random.randrange(100):02d}"
    name, ours, theirs = f"sna{tag}", f"snh{tag}", f"snr{tag}"
    net = f"198.18.{random.randrange(256)}"
    last = random.randrange(64) * 4
    local, address = f"{net}.{last + 1}", f"{net}.{last + 2}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", name)
        _ip("addr", "add", f"{local}/30", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("addr", "add", f"{address}/30", "dev", theirs, netns=name)
        _ip("link", "set", theirs, "up", netns=name)
        _ip("link", "set", "lo", "up", netns=name)
        yield RemoteHost(name, local, address)
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
