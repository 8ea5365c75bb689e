"""Trusted proxies and webmail sessions through the real ``saslnetauth serve``
(docs/webmail.md): ``real_rip`` on the auth socket, the session window, every case
that ends a session at once, and the log (never a password)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.clitools import init_with_user, run
from tests.support.metrics import auth, plain, samples
from tests.support.serverproc import AuthClient, free_port, run_server

PW = "w3bmail password"
OK = "OK\t1\tuser=alice"
FAIL = "FAIL\t1\tuser=alice\treason=Authentication failed"
FAILURE_DELAY = 0.2
PROXY = "127.0.0.1"
HOME = "203.0.113.9"  # alice's network
AWAY = "198.51.100.7"  # nobody's network
SESSION = 1.5


def _config(tmp: Path, session: float = SESSION, serve: str = "") -> Path:
    cfg = tmp / "c.toml"
    cfg.write_text(
        f"[serve]\npenalty_max = 0\n{serve}"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        f'[proxies]\nnetworks = ["{PROXY}/32"]\nsession_seconds = {session}\n'
    )
    return cfg


def _ask(
    c: AuthClient, password: str, rip: str, service: str, real_rip: str | None = None
) -> tuple[str, float]:
    started = time.monotonic()
    c.plain(1, "alice", password, rip=rip, service=service, real_rip=real_rip)
    return c.line(), time.monotonic() - started


def _imap(c: AuthClient, password: str, browser: str) -> str:
    """The webmail's IMAP login: Dovecot forwards the browser's address."""
    return _ask(c, password, browser, "imap", real_rip=PROXY)[0]


def _smtp(c: AuthClient, password: str) -> tuple[str, float]:
    """The webmail's SMTP AUTH: Postfix sees only the webmail host."""
    return _ask(c, password, PROXY, "smtp")


def _app(db: str, label: str, *args: str) -> str:
    r = run("user", "app-password", "add", "alice", "--label", label, *args, "--json", db=db)
    assert r.code == 0, r.err
    return str(json.loads(r.out)["password"])


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_forwarded_logins_are_judged_by_the_client_address(tmp_path: Path, mode: str) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/w.db", "alice", PW, HOME)
    # a global network that lists the proxy: never matched (the proxy is no client)
    assert run("net", "add", f"{PROXY}/32", db=db).code == 0
    cfg = _config(tmp_path, serve=f'worker_mode = "{mode}"\n')
    with run_server(db, config=cfg, failure_delay=FAILURE_DELAY) as srv:
        c = srv.connect()
        c.handshake()
        assert _imap(c, PW, HOME) == OK
        line, took = _ask(c, PW, AWAY, "imap", real_rip=PROXY)
        assert line == FAIL and took >= FAILURE_DELAY
        # forwarded by a connection that is not a trusted proxy: judged by that one
        assert _ask(c, PW, HOME, "imap", real_rip="192.0.2.66")[0] == FAIL
        # the proxy itself, nothing forwarded, no session (the refused login ended it)
        line, took = _smtp(c, PW)
        assert line == FAIL and took >= FAILURE_DELAY
        # a forwarded address that is the proxy's own is no client address
        assert _ask(c, PW, PROXY, "imap", real_rip=PROXY)[0] == FAIL
        assert srv.stop() == 0
        log = srv.log()
    assert f"auth ok: user=alice service=imap rip={HOME} proxy={PROXY} " in log
    assert f"auth fail: user=alice service=imap rip={AWAY} proxy={PROXY} reason=network" in log
    assert "rip=192.0.2.66 reason=network" in log
    assert f"rip=- proxy={PROXY} reason=proxy_without_client_address" in log
    assert PW not in log
    with sa.create_engine(db).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT rip, proxy, verdict, reason FROM auth_events ORDER BY id")
        ).all()
    assert (HOME, PROXY, "ok", "ok") in rows
    assert (None, PROXY, "fail", "proxy_without_client_address") in rows


def test_the_session_admits_the_webmails_smtp_auth_and_ends(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/w.db", "alice", PW, HOME)
    r = run("user", "add", "bob", "--password-stdin", "--net", HOME, db=db, stdin=PW + "\n")
    assert r.code == 0, r.err
    phone = _app(db, "phone", "--net", HOME)
    cfg = _config(tmp_path)
    with run_server(db, config=cfg, failure_delay=FAILURE_DELAY) as srv:
        c = srv.connect()
        c.handshake()
        assert _smtp(c, PW)[0] == FAIL  # no session yet
        assert _imap(c, PW, HOME) == OK
        assert _smtp(c, PW)[0] == OK  # inside the window
        assert _smtp(c, PW + "x")[0] == FAIL  # a wrong password stays wrong
        c.plain(1, "bob", PW, rip=PROXY, service="smtp")
        assert c.line() == "FAIL\t1\tuser=bob\treason=Authentication failed"  # another user
        assert _smtp(c, phone)[0] == FAIL  # another credential of alice
        # the window: every allowed forwarded login renews it, then it lapses
        time.sleep(SESSION / 2)
        assert _imap(c, PW, HOME) == OK
        time.sleep(SESSION / 2 + 0.2)
        assert _smtp(c, PW)[0] == OK  # renewed
        time.sleep(SESSION + 0.1)
        assert _smtp(c, PW)[0] == FAIL  # lapsed
        # a refused forwarded login ends it at once
        assert _imap(c, PW, HOME) == OK
        assert _imap(c, PW, AWAY) == FAIL
        assert _smtp(c, PW)[0] == FAIL
        # the app password's session, then the app password deleted
        assert _imap(c, phone, HOME) == OK
        assert _smtp(c, phone)[0] == OK
        assert _smtp(c, PW)[0] == FAIL  # the main password opened no session
        assert run("user", "app-password", "del", "alice", "phone", db=db).code == 0
        assert _smtp(c, phone)[0] == FAIL
        # a revoked network, a disabled user, a password change
        assert _imap(c, PW, HOME) == OK
        assert run("user", "net", "del", "alice", HOME, db=db).code == 0
        assert _smtp(c, PW)[0] == FAIL
        assert run("user", "net", "add", "alice", HOME, db=db).code == 0
        assert _smtp(c, PW)[0] == FAIL  # that refusal ended the session
        assert _imap(c, PW, HOME) == OK
        assert run("user", "disable", "alice", db=db).code == 0
        assert _smtp(c, PW)[0] == FAIL
        assert run("user", "enable", "alice", db=db).code == 0
        assert _smtp(c, PW)[0] == FAIL
        assert _imap(c, PW, HOME) == OK
        # the command line ends the sessions of a user whose password it changed
        r = run(
            "--config",
            str(cfg),
            "user",
            "passwd",
            "alice",
            "--password-stdin",
            db=db,
            stdin=PW + "2\n",
        )
        assert r.code == 0, r.err
        assert "webmail sessions of alice ended" in r.err
        assert _smtp(c, PW + "2")[0] == FAIL  # the new password opened no session
        assert _smtp(c, PW)[0] == FAIL  # nor does the old one any more
        # a script that writes a new hash itself: the session's fingerprint no longer
        # matches, and the login refused for it ends the session
        assert _imap(c, PW + "2", HOME) == OK
        with sa.create_engine(db).begin() as conn:
            new_hash = {"h": "{PLAIN}" + PW + "3"}
            conn.execute(
                sa.text("UPDATE users SET password_hash = :h WHERE name = 'alice'"), new_hash
            )
        time.sleep(1.1)  # global_cache_seconds: the change is in force for the next login
        assert _smtp(c, PW + "3")[0] == FAIL
        assert srv.stop() == 0
        log = srv.log()
    assert f'rip=- proxy={PROXY} rule="webmail session from {HOME}: user network {HOME} (' in log
    assert "webmail session ended: user=alice" in log
    assert PW not in log and phone not in log
    with sa.create_engine(db).connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM webmail_sessions")).scalar()
    assert left == 0  # every case above ended or let lapse the sessions


def test_sessions_survive_a_restart(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/w.db", "alice", PW, HOME)
    cfg = _config(tmp_path, session=600)
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert _imap(c, PW, HOME) == OK
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert _smtp(c, PW)[0] == OK
    # without sessions (0) the proxy alone admits nothing; /metrics counts both
    port = free_port()
    metrics = f'metrics_listen = "inet:127.0.0.1:{port}"\n'
    with run_server(db, config=_config(tmp_path, session=0, serve=metrics)) as srv:
        c = srv.connect()
        c.handshake()
        assert _imap(c, PW, HOME) == OK
        assert _smtp(c, PW)[0] == FAIL
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            got = samples(resp.read().decode())
    assert got[auth("fail", "proxy_without_client_address", "smtp")] == 1
    assert got[plain("saslnetauth_proxy_logins_total", proxy=PROXY, verdict="ok")] == 1
    assert got[plain("saslnetauth_proxy_logins_total", proxy=PROXY, verdict="fail")] == 1
