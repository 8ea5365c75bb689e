"""Expiring grants through the real `saslnetauth serve` (issue 16, part 1).

No test sleeps to make a grant expire: rows already expired and rows in the future
are written (CLI or SQL, as an admin script would), or the end is moved in the
database. The one place where time itself must pass is the global networks' cached
copy, which no database change touches: there the test waits for the wall clock to
pass a grant's end (an event, checked, not a sleep with a hoped-for outcome).
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from tests.support.clitools import run
from tests.support.serverproc import ServerProcess, run_server

PW = "s3cret pw"
CONFIG = """
global_cache_seconds = 60
[serve]
workers = 1
penalty_max = 0
"""


def _db(url: str) -> str:
    assert run("init", db=url).code == 0
    for name in ("alice", "bob"):
        r = run("user", "add", name, "--hash", "{PLAIN}" + PW, db=url)
        assert r.code == 0, r.err
    return url


def _sql(url: str, statement: str, **params: object) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def _login(srv: ServerProcess, user: str, rip: str, service: str = "smtp") -> str:
    c = srv.connect()
    try:
        c.handshake()
        return c.login_plain(user, PW, rip=rip, service=service).split("\t")[0]
    finally:
        c.close()


def test_user_grants_before_and_after_expiry(sqlite_url: str, tmp_path: Path) -> None:
    db = _db(sqlite_url)
    add = ("user", "net", "add", "alice")
    assert run(*add, "198.51.100.0/24", "--expires", "8h", db=db).code == 0
    assert run(*add, "203.0.113.0/24", "--expires", "1h", db=db).code == 0
    _sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-1 seconds') "
             "WHERE network = '203.0.113.0/24'")  # fmt: skip
    cfg = tmp_path / "serve.toml"
    cfg.write_text(CONFIG)
    with run_server(db, config=cfg) as srv:
        assert _login(srv, "alice", "198.51.100.7") == "OK"
        assert _login(srv, "alice", "203.0.113.7") == "FAIL"  # expired before the start
        # the end moved into the past: the very next login is refused
        _sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-1 seconds') "
                 "WHERE network = '198.51.100.0/24'")  # fmt: skip
        assert _login(srv, "alice", "198.51.100.7") == "FAIL"
        # and renewed with the CLI: admitted again
        assert run(*add, "198.51.100.0/24", "--expires", "2d", db=db).code == 0
        assert _login(srv, "alice", "198.51.100.7") == "OK"
        log = srv.log()
    assert 'rule="user network 198.51.100.0/24 (all services, until ' in log
    assert "auth fail: user=alice service=smtp rip=203.0.113.7 reason=network" in log


def test_global_grant_expires_in_the_servers_cached_copy(sqlite_url: str, tmp_path: Path) -> None:
    """The server keeps its copy of the global networks while their version does not
    move (global_cache_seconds = 0: the version is asked at every login, and passing
    time changes nothing in the database): a global grant in that copy stops admitting
    at its end."""
    db = _db(sqlite_url)
    cfg = tmp_path / "serve.toml"
    cfg.write_text(CONFIG.replace("global_cache_seconds = 60", "global_cache_seconds = 0"))
    margin = 3.0
    with run_server(db, config=cfg) as srv:
        for _attempt in range(4):
            ends = int(time.time() + margin) + 1
            _sql(db, "DELETE FROM global_networks")
            _sql(db, "INSERT INTO global_networks (network, services, expires_at) VALUES "
                     "('192.0.2.0/24', 'smtp', datetime(:ends, 'unixepoch'))", ends=ends)  # fmt: skip
            # the first login after the change loads the copy, with the grant in it
            reply = _login(srv, "bob", "192.0.2.9")
            if time.time() < ends:  # decided before the end (the reply came before it)
                assert reply == "OK"
                break
            margin *= 2  # a busy machine: try again with more room
        else:
            raise AssertionError("could not log in before the grant's end in four tries")
        while time.time() < ends + 0.05:  # wait for the end itself, not for a duration
            time.sleep(ends + 0.05 - time.time())
        assert _login(srv, "bob", "192.0.2.9") == "FAIL"
        assert _login(srv, "bob", "192.0.2.9") == "FAIL"
        log = srv.log()
    assert "auth fail: user=bob service=smtp rip=192.0.2.9 reason=unknown_user" not in log
    assert log.count("auth fail: user=bob service=smtp rip=192.0.2.9 reason=no_network_rules") == 2


def test_server_purges_expired_grants_with_one_log_line(sqlite_url: str, tmp_path: Path) -> None:
    db = _db(sqlite_url)
    assert run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "1h", db=db).code == 0
    assert run("user", "net", "add", "alice", "203.0.113.0/24", "--expires", "1h", db=db).code == 0
    assert run("net", "add", "10.0.0.0/8", "--expires", "1h", db=db).code == 0
    _sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-3 days') "
             "WHERE network = '198.51.100.0/24'")  # fmt: skip
    _sql(db, "UPDATE global_networks SET expires_at = datetime('now', '-3 days')")
    cfg = tmp_path / "serve.toml"
    cfg.write_text(CONFIG + "expired_keep_days = 2\n")
    with run_server(db, config=cfg) as srv:
        log = srv.wait_log("expired networks purged")
    lines = [line for line in log.splitlines() if "expired networks purged" in line]
    assert len(lines) == 1, lines
    assert "user_networks=1 global_networks=1 keep_days=2" in lines[0]
    assert "user alice 198.51.100.0/24 until " in lines[0] and "global 10.0.0.0/8 until" in lines[0]
    shown = run("user", "show", "alice", "--json", db=db).out
    assert "198.51.100.0/24" not in shown and "203.0.113.0/24" in shown
