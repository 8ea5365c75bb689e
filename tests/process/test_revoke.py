"""Revoke commands run as child processes: the runner, its bound and timeout, and the expiry watcher."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from saslnetauth.events.commands import CommandRunner, run_now
from saslnetauth.events.revoke import (
    RevokeEvent,
    revoke_now,
)
from saslnetauth.serve.revokewatch import ExpiryWatcher
from saslnetauth.settings import RevokeConfig
from saslnetauth.store.connect import Database
from tests.support.clitools import run

#: A program that appends its arguments and SASLNETAUTH_* environment as a JSON line.
RECORD = (
    "import json, os, sys; "
    "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2:], "
    "{k: v for k, v in os.environ.items() if k != 'LC_CTYPE'}]) + '\\n')"
)


@pytest.fixture
def db(sqlite_url: str) -> str:
    assert run("init", db=sqlite_url).code == 0
    for name in ("alice", "bob"):
        r = run("user", "add", name, "--hash", "{PLAIN}pw", "--net", "192.0.2.0/24", db=sqlite_url)
        assert r.code == 0, r.err
    return sqlite_url


def _sql(url: str, statement: str, **params: object) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _watch(url: str, command: list[str], start: float) -> tuple[ExpiryWatcher, list[float]]:
    clock = [start]
    database = Database(url)
    config = RevokeConfig(command=command, check_seconds=1)
    return ExpiryWatcher(database, config, clock=lambda: clock[0]), clock


def test_revoke_now_is_the_hook_for_other_revocations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A suspension (not built yet) calls revoke_now: one run, one log line."""
    out = tmp_path / "ran"
    config = RevokeConfig(command=[sys.executable, "-c", RECORD, str(out), "{user}"])
    with caplog.at_level("INFO", logger="saslnetauth.revoke"):
        outcome = revoke_now(config, RevokeEvent("suspended", "alice"))
    assert outcome is not None and outcome.ok
    argv, env = json.loads(out.read_text())
    assert (argv, env["SASLNETAUTH_EVENT"]) == (["alice"], "suspended")
    assert [r.getMessage() for r in caplog.records] == [
        "revoke command done: event=suspended user=alice status=0"
    ]
    assert revoke_now(RevokeConfig(), RevokeEvent("suspended", "alice")) is None


def test_run_now_reports_status_and_kills_on_timeout() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    assert run_now(["true"], env, timeout=5).ok
    failed = run_now([sys.executable, "-c", "import sys; sys.exit('nope')"], env, timeout=5)
    assert (failed.status, failed.kind, failed.error) == (1, "failed", "nope")
    nobody = [sys.executable, "-c", "import sys; sys.exit(68)"]
    assert not run_now(nobody, env, timeout=5).ok
    done = run_now(nobody, env, timeout=5, ok_status=(0, 68))
    assert (done.ok, done.status, done.kind) == (True, 68, "done")
    killed = run_now([sys.executable, "-c", "import time; time.sleep(60)"], env, timeout=0.5)
    assert (killed.status, killed.kind) == (None, "killed")
    missing = run_now(["/nonexistent/doveadm"], env, timeout=5)
    assert (missing.status, missing.kind) == (None, "failed to start")


def test_runner_queues_within_its_bound_then_drops(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    log = __import__("logging").getLogger("test.runner")

    async def go() -> CommandRunner:
        runner = CommandRunner("revoke", log, timeout=10, max_running=1, max_queued=2)
        for n in range(4):
            argv = [sys.executable, "-c", RECORD, str(out), str(n)]
            runner.submit(argv, {"PATH": "/usr/bin:/bin"}, fields={"n": n})
        assert (runner.running, runner.queued, runner.dropped) == (1, 2, 1)
        await runner.drain(30)
        return runner

    runner = asyncio.run(go())
    ran = [json.loads(line)[0] for line in out.read_text().splitlines()]
    assert ran == [["0"], ["1"], ["2"]]  # in order, one at a time; the fourth dropped
    assert (runner.running, runner.queued, runner.started) == (0, 0, 3)


def test_watcher_runs_the_command_once_per_expiry(db: str, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    now = float(int(time.time()))
    hour, two = _iso(now + 3600), _iso(now + 7200)
    for name, net in (("alice", "198.51.100.0/24"), ("alice", "any"), ("bob", "203.0.113.9")):
        r = run("user", "net", "add", name, net, "--until", hour, db=db)
        assert r.code == 0, r.err
    r = run("user", "app-password", "add", "bob", "--label", "phone", "--until", two, db=db)
    assert r.code == 0, r.err
    r = run("net", "add", "203.0.113.0/24", "--until", hour, db=db)
    assert r.code == 0, r.err
    # an admin's script writes an expiry as text; an invalid one never matches
    _sql(
        db,
        "UPDATE user_networks SET expires_at = :t WHERE network = '203.0.113.9'",
        t=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now + 3600)),
    )
    _sql(
        db,
        "INSERT INTO global_networks (network, expires_at, created_at) "
        "VALUES ('198.18.0.0/15', 'soon', '2026-01-01 00:00:00')",
    )
    record = [sys.executable, "-c", RECORD, str(out), "{user}", "{network}", "{credential}"]
    watcher, clock = _watch(db, record, now)

    async def look(at: float) -> int:
        clock[0] = at
        n = await watcher.check()
        await watcher.runner.drain(30)
        return n

    assert asyncio.run(look(now + 1800)) == 0  # nothing expired yet
    assert not out.exists()
    assert asyncio.run(look(now + 3601)) == 4  # the four 1 h rows, each once
    assert asyncio.run(look(now + 3700)) == 0  # not again
    assert asyncio.run(look(now + 7201)) == 1  # the app password
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    argvs = sorted(tuple(a) for a, _ in runs)
    assert argvs == sorted(
        [
            ("alice", "198.51.100.0/24"),
            ("alice",),  # "any": every session of the user
            ("bob", "203.0.113.9"),
            ("203.0.113.0/24",),  # a global grant: {network} alone
            ("bob", "phone"),
        ]
    )
    events = {
        (e["SASLNETAUTH_EVENT"], e["SASLNETAUTH_USER"], e["SASLNETAUTH_CREDENTIAL"])
        for _, e in runs
    }
    assert ("app_password_expired", "bob", "phone") in events
    assert ("network_expired", "alice", "") in events
    assert all(
        set(e)
        <= {
            "PATH",
            "LANG",
            "SASLNETAUTH_USER",
            "SASLNETAUTH_EVENT",
            "SASLNETAUTH_CREDENTIAL",
            "SASLNETAUTH_NETWORK",
        }
        for _, e in runs
    )


def test_watcher_runs_one_command_for_the_same_user(db: str, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    now = float(int(time.time()))
    for net in ("198.51.100.0/24", "203.0.113.0/24"):
        assert run("user", "net", "add", "alice", net, "--until", _iso(now + 3600), db=db).code == 0
    watcher, clock = _watch(db, [sys.executable, "-c", RECORD, str(out), "{user}"], now)

    async def look() -> int:
        clock[0] = now + 3601
        n = await watcher.check()
        await watcher.runner.drain(30)
        return n

    assert asyncio.run(look()) == 1
    assert [json.loads(line)[0] for line in out.read_text().splitlines()] == [["alice"]]
