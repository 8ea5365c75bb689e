"""App passwords through the real ``saslnetauth serve``: wire, log, record, alert, last use."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.clitools import init_with_user, run
from tests.support.serverproc import AuthClient, b64, run_server

PW = "m4in password"
FAIL = "FAIL\t1\tuser=alice\treason=Authentication failed"
FAILURE_DELAY = 0.3


def _app(db: str, label: str, *args: str) -> str:
    r = run("user", "app-password", "add", "alice", "--label", label, *args, "--json", db=db)
    assert r.code == 0, r.err
    return str(json.loads(r.out)["password"])


def _wrong(token: str) -> str:
    return token[:-1] + ("a" if token[-1] != "a" else "b")


def _alerts(out: Path) -> int:
    if not out.exists():
        return 0
    return sum(1 for line in out.read_text().splitlines() if line.startswith("credential="))


def _ask(c: AuthClient, password: str, rip: str, service: str) -> tuple[str, float]:
    started = time.monotonic()
    c.plain(1, "alice", password, rip=rip, service=service)
    line = c.line()
    return line, time.monotonic() - started


@pytest.mark.parametrize("level", ["info", "debug"])
def test_app_passwords_through_the_responder(tmp_path: Path, level: str) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/ap.db", "alice", PW, "127.0.0.2")
    phone = _app(db, "phone", "--service", "imap", "--net", "any")
    office = _app(db, "office", "--net", "127.0.0.5")
    trip = _app(db, "trip", "--net", "any", "--expires", "8h")
    gone = _app(db, "gone", "--net", "any")
    with sa.create_engine(db).begin() as conn:  # expired already, as a script may write it
        conn.execute(
            sa.text(
                "UPDATE app_passwords SET expires_at = '2020-01-01 00:00:00' WHERE label = 'trip'"
            )
        )
    out = tmp_path / "alert.out"
    script = tmp_path / "alert.sh"
    # the stolen-credential alerts only (the office's first login is a new place too)
    script.write_text(
        '#!/bin/sh\n[ "$SASLNETAUTH_EVENT" = stolen_credentials ] || exit 0\n'
        f'{{ cat; echo "credential=$SASLNETAUTH_CREDENTIAL"; }} >> {out}\n'
    )
    script.chmod(0o755)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[serve]\npenalty_max = 0\nalert_command = ["{script}"]\n'
        f'[logging]\nlevel = "{level}"\n'
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg, failure_delay=FAILURE_DELAY) as srv:
        c = srv.connect()
        c.handshake()
        c.send(f"FOO\t{b64(phone)}\n")  # an unknown command: a debug record
        ok = [
            (phone, "203.0.113.5", "imap"),
            (phone.upper().replace("-", " "), "203.0.113.5", "imap"),
            (office, "127.0.0.5", "smtp"),
            (PW, "127.0.0.2", "smtp"),
        ]
        for password, rip, svc in ok:
            line, _ = _ask(c, password, rip, svc)
            assert line == "OK\t1\tuser=alice", (rip, svc)
        refused = {
            "wrong secret": (_wrong(phone), "203.0.113.5", "imap"),
            "wrong service": (phone, "203.0.113.5", "smtp"),
            "wrong network": (office, "127.0.0.2", "smtp"),  # the user's own network
            "main from the phone's network": (PW, "203.0.113.5", "imap"),
            "expired": (trip, "203.0.113.5", "imap"),
        }
        for why, (password, rip, svc) in refused.items():
            line, took = _ask(c, password, rip, svc)
            assert line == FAIL, why
            assert took >= FAILURE_DELAY, why  # never before the failure deadline
        assert _ask(c, gone, "203.0.113.5", "imap")[0] == "OK\t1\tuser=alice"
        assert run("user", "app-password", "del", "alice", "gone", db=db).code == 0
        assert _ask(c, gone, "203.0.113.5", "imap")[0] == FAIL  # the next login
        assert run("user", "disable", "alice", db=db).code == 0
        assert _ask(c, phone, "203.0.113.5", "imap")[0] == FAIL
        assert run("user", "enable", "alice", db=db).code == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alerts(out) < 3:
            time.sleep(0.05)
        assert srv.stop() == 0  # writes the record and the last use
        log = srv.log()
    # three correct passwords from where they may not log in: alerts naming the credential
    assert sorted(out.read_text().splitlines()) == sorted(
        [
            "stolen credentials: user=alice rip=203.0.113.5 service=smtp "
            "reason=no_network_rules credential=phone",
            "credential=phone",
            "stolen credentials: user=alice rip=127.0.0.2 service=smtp reason=network "
            "credential=office",
            "credential=office",
            "stolen credentials: user=alice rip=203.0.113.5 service=imap reason=network",
            "credential=",
        ]
    )
    for needle in (
        "auth ok: user=alice service=imap rip=203.0.113.5 credential=phone",
        "rip=203.0.113.5 credential=phone reason=bad_password",
        "service=smtp rip=203.0.113.5 credential=phone reason=no_network_rules credentials_valid=yes",
        "rip=127.0.0.2 credential=office reason=network credentials_valid=yes",
        "credential=trip reason=expired",
        "credential=phone reason=disabled",
    ):
        assert needle in log, needle
    if level == "debug":
        assert " DEBUG " in log
    for token in (phone, office, trip, gone):
        letters = token.replace("-", "")
        for form in (token, letters, letters[7:], b64(token), b64(f"\0alice\0{token}")):
            assert form not in log, form
            assert base64.b64encode(form.encode()).decode().rstrip("=") not in log
    # the record and the report name the credential
    report = json.loads(run("report", "--json", db=db).out)
    stolen = {(s["user"], s["address"], s["credential"]) for s in report["stolen_credentials"]}
    assert stolen == {
        ("alice", "127.0.0.2", "office"),
        ("alice", "203.0.113.5", "phone"),
        ("alice", "203.0.113.5", None),
    }
    assert report["failures_by_reason"]["expired"] == 1
    text = run("report", db=db).out
    assert "alice (app password office) from 127.0.0.2: 1 times" in text
    with sa.create_engine(db).connect() as conn:
        # by decision time: cheap logins are recorded by the server's own engine, slow
        # ones by the workers', so the ids need not follow the order of the logins
        labels = conn.execute(
            sa.text("SELECT credential FROM auth_events WHERE verdict = 'ok' ORDER BY ts, id")
        ).scalars()
        assert list(labels) == ["phone", "phone", "office", None, "gone"]
    # last use, written in the background, for the app passwords that logged in
    listed = json.loads(run("user", "app-password", "list", "alice", "--json", db=db).out)
    used = {a["label"]: a["last_used_at"] for a in listed}
    assert used["phone"] is not None and used["office"] is not None
    assert used["trip"] is None and "gone" not in used
