"""The command line and trusted proxies (docs/webmail.md): ``check --proxy`` explains
the case and never opens or ends a session, ``net add`` / ``user net add`` warn of a
network overlapping a proxy's, ``report`` counts logins per proxy."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import sqlalchemy as sa

from tests.support.clitools import init_with_user, run

PW = "w3bmail password"


def _setup(tmp_path: Path) -> tuple[str, Path]:
    db = init_with_user(f"sqlite:///{tmp_path}/p.db", "alice", PW, "203.0.113.0/24")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[proxies]\nnetworks = ["127.0.0.1/32"]\nsession_seconds = 600\n')
    return db, cfg


def _check(db: str, cfg: Path, *args: str) -> tuple[int, str]:
    r = run("--config", str(cfg), "check", "alice", "--password-stdin", *args, db=db, stdin=PW)
    return r.code, r.out


def _sessions(db: str) -> int:
    with sa.create_engine(db).connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM webmail_sessions")).scalar_one())


def test_check_explains_each_case(tmp_path: Path) -> None:
    db, cfg = _setup(tmp_path)
    code, out = _check(db, cfg, "--rip", "203.0.113.9", "--proxy", "127.0.0.1", "--service", "imap")
    assert code == 0, out
    assert "route: forwarded by trusted proxy 127.0.0.1: judged by 203.0.113.9" in out
    assert "ACCEPTED: user alice from 203.0.113.9 through proxy 127.0.0.1 for imap" in out
    assert _sessions(db) == 0  # check opens none
    code, out = _check(db, cfg, "--rip", "203.0.113.9", "--proxy", "192.0.2.1")
    assert code == 1
    assert "not a trusted proxy: judged by 192.0.2.1" in out
    code, out = _check(db, cfg, "--rip", "127.0.0.1")
    assert code == 1
    assert "REJECTED: user alice from proxy 127.0.0.1 for smtp" in out
    assert "reason: proxy_without_client_address" in out
    # a live session (as an allowed forwarded login writes it) admits it; check leaves it
    with sa.create_engine(db).begin() as conn:
        uid = conn.execute(sa.text("SELECT id FROM users WHERE name = 'alice'")).scalar_one()
        phash = conn.execute(sa.text("SELECT password_hash FROM users")).scalar_one()
        fp = hashlib.sha256(phash.encode()).hexdigest()[:16]
        conn.execute(
            sa.text(
                "INSERT INTO webmail_sessions (user_id, scope, proxy, rip, fingerprint, expires)"
                " VALUES (:u, 0, '127.0.0.1', '203.0.113.9', :f, :e)"
            ),
            {"u": uid, "f": fp, "e": time.time() + 600},
        )
    code, out = _check(db, cfg, "--rip", "127.0.0.1")
    assert code == 0, out
    assert "webmail session from 203.0.113.9" in out
    code, out = _check(db, cfg, "--rip", "203.0.113.9", "--proxy", "127.0.0.1", "--service", "x")
    assert _sessions(db) == 1
    r = run(
        "--config",
        str(cfg),
        "check",
        "alice",
        "--password-stdin",
        "--rip",
        "198.51.100.1",
        "--proxy",
        "127.0.0.1",
        db=db,
        stdin=PW,
    )
    assert r.code == 1
    assert _sessions(db) == 1  # a refused check ends nothing


def test_net_add_warns_of_a_proxy_network(tmp_path: Path) -> None:
    db, cfg = _setup(tmp_path)
    r = run("--config", str(cfg), "net", "add", "127.0.0.0/8", db=db)
    assert r.code == 0
    assert "127.0.0.0/8 overlaps the trusted proxies 127.0.0.1/32" in r.err
    r = run("--config", str(cfg), "user", "net", "add", "alice", "127.0.0.1", db=db)
    assert r.code == 0
    assert "overlaps the trusted proxies" in r.err
    r = run("--config", str(cfg), "user", "net", "add", "alice", "198.51.100.0/24", db=db)
    assert r.code == 0 and "overlaps" not in r.err
    # and the proxy stays no client: the global 127.0.0.0/8 does not admit it
    code, out = _check(db, cfg, "--rip", "127.0.0.1")
    assert code == 1 and "proxy_without_client_address" in out


def test_report_counts_logins_per_proxy(tmp_path: Path) -> None:
    db, _ = _setup(tmp_path)
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    rows = [
        ("203.0.113.9", "127.0.0.1", "ok", "ok"),
        ("203.0.113.9", "127.0.0.1", "ok", "ok"),
        (None, "127.0.0.1", "fail", "proxy_without_client_address"),
        ("203.0.113.9", None, "ok", "ok"),
    ]
    with sa.create_engine(db).begin() as conn:
        for rip, proxy, verdict, reason in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO auth_events (ts, user, rip, service, verdict, reason, proxy)"
                    " VALUES (:ts, 'alice', :rip, 'smtp', :v, :r, :p)"
                ),
                {"ts": now, "rip": rip, "v": verdict, "r": reason, "p": proxy},
            )
    r = run("report", "--json", db=db)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["logins_by_proxy"] == {"127.0.0.1": {"ok": 2, "fail": 1}}
    assert data["proxy_without_client_address"] == 1
    r = run("report", db=db)
    assert "  127.0.0.1" in r.out and "fail 1, ok 2" in r.out
    assert "proxy without client address: 1 failures" in r.out
