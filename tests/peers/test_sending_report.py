"""`saslnetauth report` on the sending limits (docs/sending.md): the real server with
[sending] and Redis, an AUTH on its auth socket, a scripted Postfix client on its
policy socket; the report shows the top senders from Redis and every deferral and
suspension from the verdict record."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.peers import missing, port_open
from tests.support.sending import connect, login_for_sending, request
from tests.support.serverproc import run_server

pytestmark = pytest.mark.peer

PW = "rep0rt pw"
HOME = "192.0.2.40"


@pytest.fixture
def prefix() -> Iterator[str]:
    if not port_open("127.0.0.1", 6379):
        missing("Redis on 127.0.0.1:6379")
    p = f"t{uuid.uuid4().hex[:12]}:"
    yield p
    subprocess.run(
        ["sh", "-c", f"redis-cli --scan --pattern '{p}*' | xargs -r redis-cli del"],
        check=False,
        capture_output=True,
    )


async def _policy(path: Path) -> list[str]:
    c = await connect(path)
    got = []
    for i in range(4):  # limit 2 messages: two pass, two deferred, then suspended
        got.append(await c.ask(request("RCPT", client=HOME, instance=f"m{i}")))
        got.append(await c.ask(request("END-OF-MESSAGE", client=HOME, instance=f"m{i}")))
    got.append(await c.ask(request("RCPT", user="bob", client="192.0.2.41", instance="b")))
    await c.close()
    return got


def test_report_shows_top_senders_deferrals_and_suspensions(tmp_path: Path, prefix: str) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/r.db", "alice", PW, HOME)
    assert run("user", "add", "bob", "--hash", "{PLAIN}b", "--net", "any", db=db).code == 0
    policy = tmp_path / "policy"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[serve]\npenalty_max = 0\n"
        f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = 2\n'
        "recipients_per_hour = 100\nsuspend_after = 2\n"
        f'[state]\nurl = "redis://127.0.0.1:6379/0"\nprefix = "{prefix}"\n'
    )
    cfg.chmod(0o600)
    with run_server(db, config=cfg) as srv:
        login_for_sending(srv, "alice", PW, HOME)
        got = asyncio.run(_policy(policy))
        srv.wait_log("credential suspended")
        assert srv.stop() == 0  # flushes the record
    assert got[:4] == ["DUNNO"] * 4
    assert [g[:9] for g in got[5:8:2]] == ["450 4.7.1"] * 2 and got[8] == "DUNNO"
    r = run("--config", str(cfg), "report", "--json", "--since", "1h", db=db)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["verdicts"] == {"ok": 1}  # the sending rows are not login verdicts
    senders = {(s["user"], s["credential"]): s for s in data["top_senders"]}
    assert senders[("alice", "main")]["messages_day"] == 2
    assert senders[("alice", "main")]["recipients_hour"] == 4
    assert senders[("bob", "main")]["recipients_day"] == 1
    assert data["top_senders"][0]["user"] == "alice"
    deferrals = data["sending_deferrals"]
    assert [(d["user"], d["credential"], d["client"], d["limit"]) for d in deferrals] == [
        ("alice", "main", HOME, "messages_per_hour")
    ] * 2
    assert [(s["user"], s["credential"]) for s in data["sending_suspensions"]] == [
        ("alice", "main")
    ]
    text = run("--config", str(cfg), "report", db=db)
    assert text.code == 0, text.err
    assert "alice main: messages 2 / 2, recipients 4 / 4" in text.out
    assert f"alice main from {HOME}: messages_per_hour" in text.out
    without = run("report", db=db)  # no [state] url: the embedded state is the server's
    assert "embedded state: not readable here" in without.out
