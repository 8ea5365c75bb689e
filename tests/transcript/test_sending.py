"""The sending policy server (docs/sending.md) over its UNIX socket, with a scripted
Postfix client, the embedded state and a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.sending.redisstate import RedisState
from saslnetauth.sending.state import EmbeddedState
from saslnetauth.settings import SendingConfig
from saslnetauth.store import SqlStore
from tests.support.sending import (
    behind_one_address,
    connect,
    note,
    ok,
    request,
    sending_server,
)

DEFER = "450 4.7.1"


def _cfg(**kw: Any) -> SendingConfig:
    base: dict[str, Any] = {
        "messages_per_hour": 3,
        "recipients_per_hour": 5,
        "messages_per_day": 50,
        "recipients_per_day": 50,
        "suspend_after": 0,
    }
    return SendingConfig(**(base | kw))


@pytest.fixture
def alice(sqlite_store: SqlStore) -> SqlStore:
    sqlite_store.add_user("alice", "{PLAIN}x", networks=[NetworkRule.parse("any", scope="user")])
    sqlite_store.add_app_password("alice", "phone", new_token)
    return sqlite_store


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_messages_and_recipients_per_hour(alice: SqlStore, tmp_path: Path) -> None:
    async def go() -> list[str]:
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), _cfg()) as links:
            await note(links, ok("alice"))
            c = await connect(tmp_path / "s")
            got = [await c.ask(request("RCPT")) for _ in range(6)]
            got += [await c.ask(request("END-OF-MESSAGE", instance=f"m{i}")) for i in range(4)]
            await c.close()
            return got

    got = run(go())
    assert got[:5] == ["DUNNO"] * 5
    assert got[5].startswith(DEFER) and "recipients in the last hour" in got[5]
    assert got[6:9] == ["DUNNO"] * 3  # instances without RCPT: recipient_count=0
    assert got[9].startswith(DEFER) and "messages in the last hour" in got[9]


def test_unauthenticated_and_other_states_are_dunno(alice: SqlStore, tmp_path: Path) -> None:
    async def go() -> list[str]:
        async with sending_server(
            tmp_path / "s", alice, EmbeddedState(), _cfg(recipients_per_hour=1)
        ):
            c = await connect(tmp_path / "s")
            got = [await c.ask(request("RCPT", user="")) for _ in range(3)]
            got += [await c.ask(request("DATA")) for _ in range(3)]
            await c.close()
            return got

    assert run(go()) == ["DUNNO"] * 6


def test_app_password_counts_apart_and_per_user_override(alice: SqlStore, tmp_path: Path) -> None:
    alice.set_sending_limits("alice", "phone", {"recipients_per_hour": 2})

    async def go() -> tuple[list[str], list[str]]:
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), _cfg()) as links:
            await note(links, ok("alice", "phone", "outside"), "198.51.100.7")
            await note(links, ok("alice"), "192.0.2.9")
            c = await connect(tmp_path / "s")
            phone = [await c.ask(request("RCPT", client="198.51.100.7")) for _ in range(3)]
            main = [await c.ask(request("RCPT")) for _ in range(6)]
            await c.close()
            return phone, main

    phone, main = run(go())
    # its own limit 2, times the outside factor 0.25: at least 1
    assert phone[0] == "DUNNO" and phone[1].startswith(DEFER)
    assert main[:5] == ["DUNNO"] * 5 and main[5].startswith(DEFER)


def test_two_credentials_behind_one_address_count_against_both(
    alice: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Postfix tells the auth server no client port: the phone and the main password
    behind one NAT address cannot be told apart, so each message counts against both
    and the tightest limit (the phone's 2) decides; the main password's counter moved
    too. A suspended candidate stops the address's mail until a working credential
    logs in there after the suspension."""
    alice.set_sending_limits("alice", "phone", {"recipients_per_hour": 2})
    with caplog.at_level(logging.WARNING, logger="saslnetauth.sending"):
        shared, alone, after = run(
            behind_one_address(tmp_path / "s", alice, EmbeddedState(), _cfg())
        )
    assert shared[:2] == ["DUNNO"] * 2 and shared[2].startswith(DEFER)
    assert alone[:3] == ["DUNNO"] * 3 and alone[3].startswith(DEFER)  # main: 2 + 3 = 5
    assert after[0].startswith(DEFER) and "suspended" in after[0]
    assert "Too many recipients" in after[1]  # the phone alone: its own limit, not suspended
    line = next(r.getMessage() for r in caplog.records if "sending deferred" in r.getMessage())
    assert "credential=app:phone" in line and "candidates=app:phone,main" in line


def test_outside_factor(alice: SqlStore, tmp_path: Path) -> None:
    async def go() -> list[str]:
        cfg = _cfg(recipients_per_hour=8, outside_factor=0.5)
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), cfg) as links:
            await note(links, ok("alice", admitted="outside"))
            c = await connect(tmp_path / "s")
            got = [await c.ask(request("RCPT")) for _ in range(5)]
            await c.close()
            return got

    got = run(go())
    assert got[:4] == ["DUNNO"] * 4 and got[4].startswith(DEFER)


def test_suspension_after_deferrals(
    alice: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def go() -> list[str]:
        cfg = _cfg(recipients_per_hour=1, suspend_after=2)
        state = EmbeddedState()
        async with sending_server(
            tmp_path / "s", alice, state, cfg, on_event=lambda w, f: events.append((w, f))
        ) as links:
            await note(links, ok("alice"))
            c = await connect(tmp_path / "s")
            got = [await c.ask(request("RCPT")) for _ in range(4)]
            await c.close()
            return got

    with caplog.at_level(logging.WARNING, logger="saslnetauth.sending"):
        got = run(go())
    assert got[0] == "DUNNO" and all(g.startswith("450 4.7.1") for g in got[1:])
    assert "suspended" in got[3]
    assert [w for w, _ in events] == ["defer", "defer", "suspended"]
    row = alice.sending_row("alice")
    assert row is not None and row.main.suspended_at is not None
    assert row.apps["phone"].suspended_at is None
    line = next(r.getMessage() for r in caplog.records if "sending deferred" in r.getMessage())
    for part in ("user=alice", "credential=main", "client=192.0.2.9", "count=1", "window=hour"):
        assert part in line
    assert alice.unsuspend("alice", None) and not alice.unsuspend("alice", None)


def test_exim_style_end_of_message_counts_its_recipients(alice: SqlStore, tmp_path: Path) -> None:
    async def go() -> list[str]:
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), _cfg()) as links:
            await note(links, ok("alice"))
            got = []
            for n in (3, 2, 1):  # one connection per message, like ${readsocket}
                c = await connect(tmp_path / "s")
                got.append(await c.ask(request("END-OF-MESSAGE", recipient_count=n)))
                await c.close()
            return got

    got = run(go())
    assert got[:2] == ["DUNNO", "DUNNO"] and got[2].startswith(DEFER)


def test_bad_request_closes_the_connection(alice: SqlStore, tmp_path: Path) -> None:
    async def go() -> bytes:
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), _cfg()):
            c = await connect(tmp_path / "s")
            c.writer.write(b"no equals\n\n")
            data = await asyncio.wait_for(c.reader.read(), 10)
            await c.close()
            return data

    assert run(go()) == b""


def test_idle_connections_close_and_busy_ones_stay(alice: SqlStore, tmp_path: Path) -> None:
    """idle_timeout counts from the client's last bytes: a client asking every 0.3 s
    keeps its connection past the 0.6 s of idle_timeout, a silent one loses it."""

    async def go() -> tuple[list[str], bytes, float]:
        cfg = _cfg(messages_per_hour=100)
        async with sending_server(tmp_path / "s", alice, EmbeddedState(), cfg, idle_timeout=0.6):
            c = await connect(tmp_path / "s")
            got = []
            for i in range(5):
                got.append(await c.ask(request("RCPT", instance=f"m{i}")))
                await asyncio.sleep(0.3)
            start = asyncio.get_running_loop().time()
            data = await asyncio.wait_for(c.reader.read(), 10)
            waited = asyncio.get_running_loop().time() - start
            await c.close()
            return got, data, waited

    got, data, waited = run(go())
    assert got == ["DUNNO"] * 5
    assert data == b"" and waited < 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_state_store_down_defers_fail_closed(alice: SqlStore, tmp_path: Path) -> None:
    """Nothing listens on the port: a real connection refusal, answered 451 4.3.0."""

    async def go() -> list[str]:
        state = RedisState(f"redis://127.0.0.1:{_free_port()}/0", timeout=0.3)
        async with sending_server(tmp_path / "s", alice, state, _cfg()):
            c = await connect(tmp_path / "s")
            got = [await c.ask(request("RCPT")) for _ in range(2)]
            got.append(await c.ask(request("RCPT", user="")))
            await c.close()
            return got

    got = run(go())
    assert got[0].startswith("451 4.3.0") and got[1].startswith("451 4.3.0")
    assert got[2] == "DUNNO"
