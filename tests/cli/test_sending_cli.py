"""``user set --messages-per-hour``, ``user app-password add --messages-per-hour``,
``user unsuspend``, ``user show`` and ``sending show`` through the console script."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from saslnetauth.store import SqlStore
from tests.support.clitools import init_with_user, run

PW = "cli sending pw"


def test_limits_suspension_and_show(sqlite_url: str, tmp_path: Path) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "192.0.2.0/24")
    r = run("user", "set", "alice", "--messages-per-hour", "7", "--recipients-per-day", "0", db=db)
    assert r.code == 0, r.err
    assert "messages_per_hour=7" in r.out and "recipients_per_day=0" in r.out
    assert run("user", "set", "alice", db=db).code == 2  # nothing to set
    assert run("user", "set", "alice", "--messages-per-hour", "-3", db=db).code != 0
    r = run(
        "user", "app-password", "add", "alice", "--label", "phone",
        "--messages-per-hour", "2", "--json", db=db,
    )  # fmt: skip
    assert r.code == 0, r.err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sending]\nrecipients_per_hour = 40\noutside_factor = 0.5\n")
    shown = json.loads(run("--config", str(cfg), "sending", "show", "alice", "--json", db=db).out)
    creds = {c["credential"]: c for c in shown["credentials"]}
    assert creds["main"]["limits"]["messages_per_hour"] == {
        "limit": 7, "outside": 3, "source": "own", "count": None,
    }  # fmt: skip
    assert creds["main"]["limits"]["recipients_per_hour"]["limit"] == 40
    assert creds["main"]["limits"]["recipients_per_day"]["limit"] == 0
    assert creds["app:phone"]["limits"]["messages_per_hour"]["limit"] == 2
    assert creds["app:phone"]["limits"]["recipients_per_day"]["source"] == "default"
    assert not creds["main"]["suspended"]

    store = SqlStore(db)
    assert store.suspend("alice", "phone")
    store.close()
    show = run("user", "show", "alice", db=db).out
    assert "phone" in show and "SUSPENDED" in show and "SUSPENDED: main" not in show
    text = run("sending", "show", "alice", db=db).out
    assert "app:phone: SUSPENDED" in text and "main: active" in text
    r = run("user", "unsuspend", "alice", "--app-password", "phone", db=db)
    assert (r.code, r.out.strip()) == (0, "app password phone of alice no longer suspended")
    r = run("user", "unsuspend", "alice", db=db)
    assert r.out.strip() == "main password of alice was not suspended"
    assert run("user", "unsuspend", "alice", "--app-password", "nope", db=db).code == 1
    with sa.create_engine(db).connect() as conn:
        assert conn.execute(sa.text("SELECT suspended_at FROM app_passwords")).scalar() is None
