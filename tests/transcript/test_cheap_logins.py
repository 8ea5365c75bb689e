"""Cheap logins decided in the server process (saslnetauth.serve.decide.inline): a
{PLAIN} password and an app password are decided there, logged and recorded like a
worker's decisions; a slow hash, and a login that cannot succeed, still go the
scheduler's way; every failure gets the one reply."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.support.clitools import run
from tests.support.serverproc import free_port, run_server

PW = "ch3ap pw"
HOME = "127.0.0.2"
OUTSIDE = "127.0.0.3"


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_cheap_logins_are_decided_in_the_server(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/c.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}" + PW, "--net", HOME, db=db).code == 0
    assert run("user", "add", "bob", "--password-stdin", "--net", HOME, db=db, stdin=PW).code == 0
    r = run(
        "user", "app-password", "add", "bob", "--label", "phone", "--net", HOME, "--json", db=db
    )
    assert r.code == 0, r.err
    token = json.loads(r.out)["password"]
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[serve]\npenalty_max = 0\nmetrics_listen = "inet:127.0.0.1:{port}"\n')
    with run_server(db, config=cfg, failure_delay=0.2) as srv:
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW, rip=HOME) == "OK\t1\tuser=alice"
        assert _metric(port, "saslnetauth_inline_total") == 1
        # a wrong one may be a retired password (slow hashes): a worker's, while one is free
        wrong = c.login_plain("alice", "nope", rip=HOME)
        assert _metric(port, "saslnetauth_inline_total") == 1
        assert c.login_plain("bob", PW, rip=HOME) == "OK\t3\tuser=bob"  # a slow hash
        assert c.login_plain("bob", token, rip=HOME) == "OK\t4\tuser=bob"  # its app password
        assert _metric(port, "saslnetauth_inline_total") == 2
        outside = c.login_plain("alice", PW, rip=OUTSIDE)  # cannot succeed: scheduled
        assert _metric(port, "saslnetauth_inline_total") == 2
        ghost = c.login_plain("ghost", PW, rip=HOME)
        assert srv.stop() == 0
        log = srv.log()
    fails = [re.sub(r"\t\d+\t", "\tN\t", x) for x in (wrong, outside)]
    assert fails == ["FAIL\tN\tuser=alice\treason=Authentication failed"] * 2
    assert ghost == "FAIL\t6\tuser=ghost\treason=Authentication failed"
    assert re.search(r"auth fail: user=alice service=smtp rip=127.0.0.2 reason=bad_password", log)
    assert "credential=phone" in log
    assert PW not in log and token not in log
    r = run("report", "--json", "--since", "1h", db=db)  # the verdict record has them all
    assert r.code == 0, r.err
    assert json.loads(r.out)["failures_by_reason"] == {
        "bad_password": 1,
        "network": 1,
        "unknown_user": 1,
    }
