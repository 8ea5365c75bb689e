"""The kernel names the owner of a client socket opened by a child running as nobody."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from saslnetauth.serve.authsocket.access import identify

NOBODY = 65534


@contextmanager
def listener(host: str, *, v6only: bool = True) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as srv:
        if family == socket.AF_INET6:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        srv.bind((host, 0))
        srv.listen()
        yield srv


def test_a_client_owned_by_nobody_is_nobody() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as nobody")
    with listener("127.0.0.1") as srv:
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: becomes nobody, then connects and waits
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                client = socket.create_connection(srv.getsockname())
                os.write(ready_w, b"x")
                os.read(done_r, 1)
                client.close()
            finally:
                os._exit(0)
        try:
            assert os.read(ready_r, 1) == b"x"
            conn, peername = srv.accept()
            with conn:
                peer = identify(conn, peername)
            assert (peer.uid, peer.remote, peer.error) == (NOBODY, False, "")
        finally:
            os.write(done_w, b"x")
            os.waitpid(pid, 0)
            for fd in (ready_r, ready_w, done_r, done_w):
                os.close(fd)
