"""Who may ask the userdb socket (``[serve] userdb_listen``): the auth socket's peer
checks (SO_PEERCRED), so a user that can reach the socket but is not allowed learns
nothing about which users exist (issue 21: every endpoint knows who its peer is)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.net import peer_tmpdir
from tests.support.serverproc import run_script_as, run_server

LOOKUP = b"VERSION\t1\t0\nUSER\t1\talice\tservice=imap\n"
# run as another user: the system's Python (the venv may not be readable by it)
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
data = b""
try:
    s.sendall(b"VERSION\\t1\\t0\\nUSER\\t1\\talice\\tservice=imap\\n")
    while b"USER\\t1" not in data and b"NOTFOUND" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError as exc:
    print("error", exc)
print(repr(data))
"""


def _ask_as_root(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(LOOKUP)
        data = b""
        while b"USER\t1" not in data and (chunk := s.recv(4096)):
            data += chunk
        return data


def test_userdb_answers_only_allowed_peers() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: connects as another user")
    with peer_tmpdir("sna-udb-") as tmp:
        db = f"sqlite:///{tmp}/u.db"
        assert run("init", db=db).code == 0
        assert run("user", "add", "alice", "--hash", "{PLAIN}x", db=db).code == 0
        userdb = tmp / "userdb"
        cfg = tmp / "c.toml"
        # the sockets' owner is nobody (mode 0600: nobody can connect), but nobody is
        # not among allowed_users: the userdb must refuse it like the auth socket does
        cfg.write_text(f'[serve]\nuserdb_listen = "unix:{userdb}"\nsocket_owner = "nobody"\n')
        with run_server(db, config=cfg, workdir=tmp) as srv:
            srv.wait_log("userdb listening")
            assert b"USER\t1\talice" in _ask_as_root(userdb)
            code, out = run_script_as("nobody", CLIENT, str(userdb))
            assert code == 0, out
            assert "alice" not in out and "NOTFOUND" not in out, out
            # closed before a byte was sent (a refused sender may see its write fail)
            assert "VERSION" not in out, out
            srv.wait_log("userdb connection refused: uid=65534")
