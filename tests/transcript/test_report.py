"""`saslnetauth report` over the verdict record the server keeps, on every database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.clitools import run
from tests.support.serverproc import run_server

PW = "rep0rt pw"


def test_report_counts_what_the_server_saw(db_url: str, tmp_path: Path) -> None:
    assert run("init", db=db_url).code == 0
    assert (
        run("user", "add", "alice", "--hash", "{PLAIN}" + PW, "--net", "127.0.0.2", db=db_url).code
        == 0
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\npenalty_max = 0\n")
    attempts = [
        ("alice", PW, "127.0.0.2", "smtp"),  # ok
        ("alice", PW, "127.0.0.2", "imap"),  # ok
        ("alice", PW, "203.0.113.5", "smtp"),  # stolen
        ("alice", PW, "203.0.113.5", "smtp"),  # stolen
        ("alice", PW, "2001:db8::5", "imap"),  # stolen
        ("alice", "x", "203.0.113.6", "smtp"),  # bad password
        ("ghost", PW, "203.0.113.5", "pop3"),  # unknown user
        ("ghost", PW, "198.51.100.1", "smtp"),  # unknown user
    ]
    with run_server(db_url, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i, (user, pw, rip, svc) in enumerate(attempts, start=1):
            c.plain(i, user, pw, rip=rip, service=svc)
            c.line()
        assert srv.stop() == 0  # flushes the record
    r = run("report", "--json", "--since", "1h", db=db_url)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["verdicts"] == {"ok": 2, "fail": 6}
    assert data["failures_by_service"] == {"smtp": 4, "pop3": 1, "imap": 1}
    assert data["failures_by_reason"] == {"network": 3, "unknown_user": 2, "bad_password": 1}
    assert data["top_denied_addresses"][0] == {"address": "203.0.113.5", "failures": 3}
    assert data["top_denied_networks"][0] == {"network": "203.0.113.0/24", "failures": 4}
    stolen = {(s["user"], s["address"]): s for s in data["stolen_credentials"]}
    assert set(stolen) == {("alice", "203.0.113.5"), ("alice", "2001:db8::5")}
    assert stolen[("alice", "203.0.113.5")]["count"] == 2
    assert stolen[("alice", "2001:db8::5")]["services"] == ["imap"]
    text = run("report", db=db_url)
    assert text.code == 0 and "alice from 203.0.113.5: 2 times" in text.out
    assert PW not in text.out and PW not in r.out
    assert run("report", "--since", "forever", db=db_url).code == 1


def test_record_can_be_switched_off(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/off.db"
    assert run("init", db=db).code == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text("[report]\nrecord = false\n")
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "ghost", "pw")
        c.line()
        srv.stop()
    data = json.loads(run("report", "--json", db=db).out)
    assert data["verdicts"] == {}
