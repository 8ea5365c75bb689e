"""Who may talk to the policy endpoint over a UNIX socket (issue 21, item 1, the class
re-check): its HTTP connections got no peer check at all, so any local user the
socket's mode let in was served, secret or not. Now a UNIX peer must be an allowed
user, as on the auth socket (``SO_PEERCRED``); over TCP the secret is the check."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.net import peer_tmpdir
from tests.support.serverproc import run_script_as, run_server

SECRET_KEYS = 'api_header = "X-Policy-Key: s3cret-header-value"\n'
#: With the secret: what a peer that may connect is answered (any HTTP status).
REQUEST = (
    b"GET /?command=allow HTTP/1.1\r\nHost: x\r\nX-Policy-Key: s3cret-header-value\r\n"
    b"Connection: close\r\n\r\n"
)
# run as another user: the system's Python (the venv may not be readable by it)
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
data = b""
try:
    s.sendall(sys.argv[2].encode())
    while chunk := s.recv(4096):
        data += chunk
except OSError as exc:
    print("error", exc)
print(repr(data))
"""


def _ask_as_root(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(REQUEST)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_policy_socket_answers_only_allowed_users() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: connects as another user")
    with peer_tmpdir("sna-pol-") as tmp:
        db = f"sqlite:///{tmp}/p.db"
        assert run("init", db=db).code == 0
        policy = tmp / "policy"
        cfg = tmp / "c.toml"
        # the socket's owner is nobody (mode 0660: nobody can connect, and it even
        # holds the secret), but nobody is not among allowed_users: refused
        cfg.write_text(
            f'[serve]\nsocket_owner = "nobody"\n[policy]\nlisten = "unix:{policy}"\n' + SECRET_KEYS
        )
        cfg.chmod(0o600)
        with run_server(db, config=cfg, workdir=tmp) as srv:
            srv.wait_log("policy listening")
            assert _ask_as_root(policy).startswith(b"HTTP/1.1 "), "root may"
            for _ in range(2):
                code, out = run_script_as("nobody", CLIENT, str(policy), REQUEST.decode())
                assert code == 0, out
                assert "HTTP" not in out, out  # closed before an answer
            log = srv.wait_log("policy connection refused: reason=peer_not_allowed uid=65534")
            assert log.count("policy connection refused") == 1, "logged once per peer"
            assert _ask_as_root(policy).startswith(b"HTTP/1.1 "), "root still may"
