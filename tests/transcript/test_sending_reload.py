"""A reload (SIGHUP) of the real server applies the new ``[sending]`` limits and
keeps what needs a restart (docs/sending.md): an AUTH on its auth socket, a
scripted Postfix client on its policy socket."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from tests.support.clitools import init_with_user
from tests.support.sending import connect, login_for_sending, request
from tests.support.serverproc import ServerProcess, run_server

PW = "rel0ad pw"
HOME = "192.0.2.50"


def _config(path: Path, policy: Path, per_hour: int, prefix: str = "a:") -> None:
    path.write_text(
        "[serve]\npenalty_max = 0\n"
        f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = {per_hour}\n'
        "recipients_per_hour = 100\nsuspend_after = 0\n"
        f'[state]\nprefix = "{prefix}"\n'
    )


def _reload(srv: ServerProcess) -> str:
    before = srv.log().count("configuration reloaded")
    srv.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while srv.log().count("configuration reloaded") == before:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    return srv.log()


async def _messages(policy: Path, first: int, count: int) -> list[str]:
    """``count`` messages of alice (RCPT, END-OF-MESSAGE): the END-OF-MESSAGE answers."""
    c = await connect(policy)
    got = []
    for i in range(first, first + count):
        assert await c.ask(request("RCPT", client=HOME, instance=f"m{i}")) == "DUNNO"
        got.append(await c.ask(request("END-OF-MESSAGE", client=HOME, instance=f"m{i}")))
    await c.close()
    return got


def test_a_reload_applies_new_limits_and_keeps_what_needs_a_restart(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/s.db", "alice", PW, HOME)
    policy = tmp_path / "policy"
    cfg = tmp_path / "c.toml"
    _config(cfg, policy, 2)
    with run_server(db, config=cfg) as srv:
        login_for_sending(srv, "alice", PW, HOME)
        got = asyncio.run(_messages(policy, 0, 3))
        assert got[:2] == ["DUNNO"] * 2 and got[2].startswith("450 4.7.1")
        _config(cfg, policy, 4)  # the admin raises the limit and reloads
        log = _reload(srv)
        assert "need a restart" not in log
        got = asyncio.run(_messages(policy, 3, 3))
        assert got[:2] == ["DUNNO"] * 2 and got[2].startswith("450 4.7.1")  # 4 in all
        _config(cfg, policy, 1, prefix="b:")  # lowered, and a key that needs a restart
        log = _reload(srv)
        assert "reload: these need a restart, not applied" in log and "[state] prefix" in log
        got = asyncio.run(_messages(policy, 6, 1))
        assert got[0].startswith("450 4.7.1")
        assert "messages in the last hour" in got[0]
        assert srv.stop() == 0
