"""Connections of the HTTP listeners (issue 21, item 2): a silent connection to the
policy port is closed after ``first_byte_timeout`` (it used to wait the 60 s
keep-alive idle time), and one peer gets only ``max_connections_per_peer`` of
``max_connections`` at once, so idle holders cannot take every descriptor."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.clitools import run
from tests.support.serverproc import free_port, run_server

REQUEST = b"GET /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n"
#: Every policy listener needs its shared secret (an unanswered key is still answered).
SECRET_KEYS = 'api_header = "X-Policy-Key: s3cret-header-value"\n'


def _answered(s: socket.socket) -> bool:
    s.sendall(REQUEST)
    try:
        return s.recv(100).startswith(b"HTTP/1.1 ")
    except ConnectionResetError:
        return False


def test_policy_port_limits_silent_connections_and_each_peer(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/h.db"
    assert run("init", db=db).code == 0
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\nfirst_byte_timeout = 1.0\n'
        "max_connections = 4\nmax_connections_per_peer = 2\n" + SECRET_KEYS
    )
    cfg.chmod(0o600)  # it holds the secret: serve refuses a world-readable one
    with run_server(db, config=cfg) as srv:
        srv.wait_log("policy listening")
        # two keep-alive connections of 127.0.0.1, each answered once (so counted)
        held = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(2)]
        assert [_answered(s) for s in held] == [True, True]
        with socket.create_connection(("127.0.0.1", port), timeout=15) as third:
            assert not _answered(third), "a third connection of 127.0.0.1 is closed"
        srv.wait_log("policy connection refused: reason=max_connections_per_peer peer=127.0.0.1")
        # another peer still gets in
        other = _connect(port, "127.0.0.2")
        assert _answered(other)
        # a silent connection is closed after first_byte_timeout (1 s), not refused
        with _connect(port, "127.0.0.3") as silent:
            t0 = time.monotonic()
            assert silent.recv(100) == b""
            print(f"\nsilent connection closed after {time.monotonic() - t0:.1f} s")
        assert "peer=127.0.0.3" not in srv.log()
        for s in [*held, other]:
            s.close()


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
