"""The unit tier's guard: its tests run in this one process (docs/testing.md).

A unit test that asks for a database server's fixture (``db_kind``,
``db_url``, ``store``) or carries the ``db`` or ``peer`` marker is refused
at collection; one that starts a process (``subprocess``, ``os.fork``,
``os.posix_spawn``, ``os.system``) or opens a TCP connection to a database
server's port fails when it tries. Such a test belongs in ``tests/db``,
``tests/cli`` or ``tests/peers``.
"""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa

from tests.support import peers

#: Fixtures that reach a database server.
DB_FIXTURES = frozenset({"db_kind", "db_url", "store"})
#: Markers of the tiers that need something outside this process.
OUTSIDE_MARKERS = ("db", "peer")


def _db_ports() -> frozenset[int]:
    ports = {5432, 3306}
    for url in (peers.PG_ADMIN_URL, peers.MY_ADMIN_URL):
        port = sa.engine.make_url(url).port
        if port:
            ports.add(port)
    return frozenset(ports)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    wrong = []
    for item in items:
        if not str(item.path).startswith(here + os.sep):
            continue
        fixtures = DB_FIXTURES & set(getattr(item, "fixturenames", ()))
        markers = [m for m in OUTSIDE_MARKERS if item.get_closest_marker(m)]
        if fixtures or markers:
            wrong.append(f"{item.nodeid}: {sorted(fixtures) + markers}")
    if wrong:
        raise pytest.UsageError(
            "unit tests that need a database server or a peer (move them to tests/db or "
            "tests/peers):\n  " + "\n  ".join(wrong)
        )


def _refuse(what: str) -> NoReturn:
    raise AssertionError(f"the unit tier runs no {what} (docs/testing.md): move this test")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No child process and no database server during a unit test."""
    ports = _db_ports()

    def no_process(*args: Any, **kwargs: Any) -> NoReturn:
        _refuse("child process")

    for module, name in (
        (_posixsubprocess, "fork_exec"),
        (subprocess, "_fork_exec"),
        (os, "fork"),
        (os, "forkpty"),
        (os, "posix_spawn"),
        (os, "posix_spawnp"),
        (os, "system"),
    ):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, no_process)
    monkeypatch.setattr(subprocess, "_USE_POSIX_SPAWN", False, raising=False)

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def checked(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[1] in ports:
            _refuse(f"database server (a connection to port {address[1]})")

    def connect(sock: socket.socket, address: Any) -> None:
        checked(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        checked(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
