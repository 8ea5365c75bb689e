"""Who may talk to the responder, and the files it makes (issue 11, items 10, 11, 14, 15):
peer credentials of UNIX clients, allowed TCP peers and listen addresses, the
handshake and idle timeouts, the per-peer share of the connection limit, the
database file's mode and sockets that a planted symbolic link cannot redirect."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.serverproc import run_server

PW = "acc3ss pw"
FAST = "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/access.db"
    r = run("init", db=url)
    assert r.code == 0, r.err
    r = run("user", "add", "alice", "--password-stdin", "--net", "127.0.0.2", db=url, stdin=PW)
    assert r.code == 0, r.err
    return url


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- item 14: the SQLite database is private -----------------------------------------


def test_sqlite_database_is_private_after_init_and_after_the_server_used_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/state/new.db"
    r = run("init", db=url)
    assert r.code == 0, r.err
    path = tmp_path / "state" / "new.db"
    assert _mode(path) == 0o600
    assert f"database file {path} created: mode 0600, owner" in r.out
    r = run("user", "add", "alice", "--password-stdin", "--net", "127.0.0.2", db=url, stdin=PW)
    assert r.code == 0, r.err
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAST)
    with run_server(url, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files[1:]), "WAL mode: the server has -wal and -shm open"
        assert [oct(_mode(f)) for f in files] == [oct(0o600)] * 3
    # an older world-readable database is made private by init, which says so
    path.chmod(0o644)
    r = run("init", db=url)
    assert r.code == 0 and _mode(path) == 0o640
    assert "tightened from 0644 to 0640" in r.out
