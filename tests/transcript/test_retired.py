"""Retired passwords (issue 25, item 2): the old hash of a changed password is kept,
and a failed login with it is logged and alerted, with the reply of any failure."""

from __future__ import annotations

import json
import time
from pathlib import Path

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason
from saslnetauth.store import SqlStore
from tests.support.clitools import init_with_user, run
from tests.support.serverproc import run_server

OLD = "old pw 1"
NEW = "new pw 2"
FAST = "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"


def retired(db: str, name: str) -> list[dict[str, str | None]]:
    r = run("user", "show", name, "--json", db=db)
    assert r.code == 0, r.err
    out: list[dict[str, str | None]] = json.loads(r.out)["retired_passwords"]
    return out


def test_password_changes_keep_the_old_hash(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/k.db", "alice", OLD, "127.0.0.2")
    assert retired(db, "alice") == []
    assert run("user", "passwd", "alice", "--password-stdin", db=db, stdin=NEW).code == 0
    first = retired(db, "alice")
    assert len(first) == 1 and first[0]["retired_at"] and first[0]["last_tried_at"] is None
    # an import that changes the hash keeps the one it replaces; one that keeps it, none
    src = tmp_path / "users"
    src.write_text("alice:{PLAIN}imported\nbob:{PLAIN}b\n")
    assert run("import", "passwd-file", str(src), db=db).code == 0
    assert len(retired(db, "alice")) == 2 and retired(db, "bob") == []
    assert run("import", "passwd-file", str(src), db=db).code == 0
    assert len(retired(db, "alice")) == 2
    shown = run("user", "show", "alice", db=db).out
    assert "retired passwords:" in shown and shown.count("last tried never") == 2
    # deleting the user deletes them (a reused id must not inherit them)
    assert run("user", "del", "alice", db=db).code == 0
    assert run("user", "add", "alice", "--password-stdin", db=db, stdin=NEW).code == 0
    assert retired(db, "alice") == []


def test_the_check_runs_only_when_allowed_and_in_time(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher
) -> None:
    s, h = sqlite_store, fast_hasher
    s.add_user("alice", h.hash(OLD), networks=[NetworkRule.parse("192.0.2.0/24", scope="user")])
    s.set_password("alice", h.hash(NEW))
    engine = DecisionEngine(s, h)
    later = time.monotonic() + 30

    def reason(pw: str, retired_by: float) -> Reason:
        return engine.decide(
            Login.of("alice", pw, "192.0.2.9", "imap", retired_by=retired_by)
        ).reason

    assert reason(OLD, later) is Reason.BAD_PASSWORD  # retired_days 0: never checked
    engine.retired_days = 30
    assert reason(OLD, later) is Reason.RETIRED_PASSWORD
    assert reason(OLD, 0.0) is Reason.BAD_PASSWORD  # no free worker
    assert reason(OLD, time.monotonic()) is Reason.BAD_PASSWORD  # no time left for a hash
    assert reason("other", later) is Reason.BAD_PASSWORD
    assert reason(NEW, later) is Reason.OK
    assert s.retired_passwords("alice")[0]["last_tried_at"] is not None


def test_retired_password_is_logged_and_alerted_with_an_ordinary_reply(tmp_path: Path) -> None:
    out = tmp_path / "alert.out"
    script = tmp_path / "alert.sh"
    script.write_text(
        f'#!/bin/sh\n{{ cat; echo "env=$SASLNETAUTH_EVENT,$SASLNETAUTH_RIP,'
        f'$SASLNETAUTH_REASON,$SASLNETAUTH_ALLOWED_NETWORK"; }} >> {out}\n'
    )
    script.chmod(0o755)
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[serve]\nalert_command = ["{script}"]\npenalty_max = 0\n' + FAST)
    # cheap hashes and a failure delay of 1 s: the failure deadline leaves room for the
    # second hash however loaded the machine is (with failure_delay 0 the deadline is
    # 1.5 times the slowest verification, and under load the room can vanish)
    db = f"sqlite:///{tmp_path}/r.db"
    assert run("--config", str(cfg), "init", db=db).code == 0
    for args, pw in ((("add", "alice", "--net", "127.0.0.2"), OLD), (("passwd", "alice"), NEW)):
        assert (
            run("--config", str(cfg), "user", *args, "--password-stdin", db=db, stdin=pw).code == 0
        )
    replies = {}
    with run_server(db, config=cfg, failure_delay=1.0) as srv:
        for label, pw, rip in (
            ("stale", OLD, "127.0.0.2"),  # the user's own network: a stale device
            ("stolen", OLD, "203.0.113.7"),  # elsewhere: someone has the old password
            ("wrong", "never was", "203.0.113.8"),
            ("again", OLD, "127.0.0.2"),  # the stale device retrying: no new alert
        ):
            c = srv.connect()
            c.handshake()
            c.plain(1, "alice", pw, rip=rip)  # the same id: the replies compare whole
            replies[label] = c.line()
            c.close()
        c = srv.connect()
        c.handshake()
        c.plain(2, "alice", NEW, rip="127.0.0.2")
        assert c.line() == "OK\t2\tuser=alice"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            not out.exists() or out.read_text().count("env=") < 2
        ):
            time.sleep(0.05)
        srv.wait_log("auth ok:")
        log = srv.log()
    assert len(set(replies.values())) == 1, replies
    assert replies["wrong"] == "FAIL\t1\tuser=alice\treason=Authentication failed"
    lines = [line for line in log.splitlines() if "auth fail:" in line]
    assert len(lines) == 4
    assert (
        "WARNING auth fail: user=alice service=smtp rip=127.0.0.2 reason=retired_password "
        "allowed_network=yes" in lines[0]
    )
    assert " WARNING " in lines[1] and "reason=retired_password allowed_network=no" in lines[1]
    assert " INFO " in lines[2] and "reason=bad_password" in lines[2]
    assert "repeat=yes reason=retired_password allowed_network=yes" in lines[3]
    alerts = sorted(out.read_text().splitlines())  # the two commands ran at once
    assert alerts == sorted(
        [
            "retired password: user=alice rip=127.0.0.2 service=smtp reason=retired_password "
            "allowed_network=yes",
            "env=retired_password,127.0.0.2,retired_password,yes",
            "retired password: user=alice rip=203.0.113.7 service=smtp reason=retired_password "
            "allowed_network=no",
            "env=retired_password,203.0.113.7,retired_password,no",
        ]
    )
    assert OLD not in log and OLD not in out.read_text()
    shown = run("user", "show", "alice", db=db).out
    assert "last tried never" not in shown and "last tried 20" in shown
