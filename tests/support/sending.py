"""A scripted Postfix policy client, and the sending server in the test's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.sending.limits import SendingPolicy
from saslnetauth.sending.logins import LoginLinks
from saslnetauth.sending.server import SendingServer
from saslnetauth.sending.state import SendingState
from saslnetauth.serve.authsocket.access import PeerPolicy
from saslnetauth.settings import SendingConfig, ServeConfig
from saslnetauth.store import SqlStore
from tests.support.serverproc import ServerProcess


def request(state: str, user: str = "alice", client: str = "192.0.2.9", **extra: object) -> bytes:
    attrs: dict[str, object] = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": client,
        "sasl_method": "PLAIN" if user else "",
        "sasl_username": user,
        "sender": f"{user}@example.org",
        "recipient": "r@example.net" if state == "RCPT" else "",
        "recipient_count": 0,
        "size": 0,
        "instance": "1.2.3",
    }
    attrs.update(extra)
    return b"".join(f"{k}={v}\n".encode() for k, v in attrs.items()) + b"\n"


class PolicyClient:
    """One connection, like one smtpd process's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, data: bytes) -> str:
        self.writer.write(data)
        await self.writer.drain()
        raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), 10)
        return raw.decode().removeprefix("action=").strip()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def connect(path: Path) -> PolicyClient:
    return PolicyClient(*await asyncio.open_unix_connection(str(path)))


def ok(user: str, credential: str | None = None, admitted: str = "own") -> Decision:
    return Decision(
        Verdict.OK,
        Reason.OK,
        user,
        credentials_valid=True,
        credential=credential,
        admitted=admitted,
    )


@contextlib.asynccontextmanager
async def sending_server(
    path: Path,
    store: SqlStore,
    state: SendingState,
    cfg: SendingConfig,
    *,
    prefix: str = "t:",
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    idle_timeout: float = 300.0,
) -> AsyncIterator[LoginLinks]:
    """The policy server on the UNIX socket ``path``; yields its login links."""
    links = LoginLinks(state, prefix, cfg.login_window)
    policy = SendingPolicy(
        cfg,
        state,
        links,
        store.sending_row,
        store.suspend,
        prefix=prefix,
        cache_seconds=0,
        on_event=on_event,
    )
    peers = PeerPolicy.from_settings(ServeConfig())
    server = SendingServer(policy, lambda: peers, idle_timeout=idle_timeout)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(64)
    await server.start(sock)
    try:
        yield links
    finally:
        await server.close()
        await links.close()
        sock.close()


async def note(links: LoginLinks, decision: Decision, rip: str = "192.0.2.9") -> None:
    """A login the responder allowed, stored before this returns."""
    links.note(decision, rip)
    await asyncio.gather(*list(links._pending))


NAT = "198.51.100.20"


async def behind_one_address(
    path: Path, store: SqlStore, state: SendingState, cfg: SendingConfig, prefix: str = "t:"
) -> tuple[list[str], list[str], list[str]]:
    """alice's phone, then her main password, log in from one NAT address: the
    answers to RCPTs from that address, from another address (main only), and
    after the main password is suspended then the phone logs in again."""
    async with sending_server(path, store, state, cfg, prefix=prefix) as links:
        await note(links, ok("alice", "phone"), NAT)
        await note(links, ok("alice"), NAT)
        c = await connect(path)
        shared = [await c.ask(request("RCPT", client=NAT)) for _ in range(3)]
        alone = [await c.ask(request("RCPT")) for _ in range(4)]
        await note(links, ok("alice"), "192.0.2.9")
        store.suspend("alice", None)
        after = [await c.ask(request("RCPT", client=NAT))]
        await asyncio.sleep(0.05)
        await note(links, ok("alice", "phone"), NAT)
        after.append(await c.ask(request("RCPT", client=NAT)))
        await c.close()
    return shared, alone, after


def login_for_sending(srv: ServerProcess, user: str, password: str, rip: str) -> None:
    """Once the real server's policy socket listens: one allowed PLAIN login of ``user``
    from ``rip`` on its auth socket (the login link the policy requests then find)."""
    srv.wait_log("sending policy listening")
    c = srv.connect()
    c.handshake()
    reply = c.login_plain(user, password, rip=rip)
    assert reply.startswith("OK"), reply
    c.close()
