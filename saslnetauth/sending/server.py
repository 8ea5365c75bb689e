"""The Postfix policy server of ``saslnetauth serve`` (``[sending] listen``).

The socket loop around :mod:`saslnetauth.sending.protocol` and
:mod:`saslnetauth.sending.limits`: the auth socket's peer checks
(:class:`~saslnetauth.serve.authsocket.access.PeerPolicy`: root, the server's
user, ``[serve] allowed_users`` / ``allowed_groups``; TCP only from loopback
clients whose socket such a user owns), at most ``[sending] max_connections``
at once, idle ones closed after ``idle_timeout``. A request that breaks the
protocol closes the connection (Postfix then answers ``451 4.3.5``: the mail
stays with the client). :func:`start_sending_listener` is all the wiring of
``serve`` needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from saslnetauth.errors import ProtocolError
from saslnetauth.logfmt import kv
from saslnetauth.sending.limits import Connection, SendingPolicy
from saslnetauth.sending.protocol import PolicyParser, format_reply
from saslnetauth.serve.authsocket.acceptor import Acceptor
from saslnetauth.serve.authsocket.access import (
    PeerPolicy,
    RefusalLog,
    identify,
    with_account_groups,
)
from saslnetauth.serve.authsocket.listeners import describe

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.sending.logins import LoginLinks
    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.store import SqlStore

__all__ = ["RESTART_KEYS", "SendingServer", "apply_reload", "open_state", "start_sending_listener"]

log = logging.getLogger("saslnetauth.sending")

READ_SIZE = 4096


class SendingServer:
    def __init__(
        self,
        policy: SendingPolicy,
        peers: Callable[[], PeerPolicy],
        *,
        max_connections: int = 512,
        idle_timeout: float = 300.0,
    ) -> None:
        self.policy = policy
        self.peers = peers
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._refusals = RefusalLog()
        self._acceptors: list[Acceptor] = []
        self._open = 0

    async def start(self, sock: socket.socket) -> None:
        acceptor = Acceptor(sock, self._on_connect, name="sending")
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("%s", kv("sending policy listening", on=describe(sock)))

    async def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = identify(writer.get_extra_info("socket"), writer.get_extra_info("peername"))
        peers = self.peers()
        if peers.needs_groups(peer):
            peer = await with_account_groups(peer)
        refusal = peers.refusal(peer)
        if refusal is None and self._open >= self.max_connections:
            refusal = "max_connections"
        if refusal is not None:
            if self._refusals.first(refusal, peer):
                log.warning(
                    "%s", kv("sending connection refused", reason=refusal, **peer.describe())
                )
            writer.close()
            return
        self._open += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._open -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = PolicyParser()
        conn = Connection()
        loop = asyncio.get_running_loop()
        # one deadline for the connection, moved at each read (not a task and a
        # timer per read, as wait_for makes): idle_timeout for the client's next
        # bytes and for taking our replies; none while we decide
        try:
            async with asyncio.timeout(None) as idle:
                while True:
                    idle.reschedule(loop.time() + self.idle_timeout)
                    data = await reader.read(READ_SIZE)
                    if not data:
                        return
                    idle.reschedule(None)
                    try:
                        requests = parser.feed(data)
                    except ProtocolError as exc:
                        log.warning("%s", kv("sending client error, disconnecting", error=str(exc)))
                        return
                    for req in requests:
                        writer.write(format_reply(await self.policy.answer(req, conn)))
                    if requests:
                        idle.reschedule(loop.time() + self.idle_timeout)
                        await writer.drain()
        except TimeoutError:
            return


def open_state(cfg: Config) -> Any:
    """The state store of ``[state]``: this process's, or Redis/Valkey."""
    if not cfg.state.url:
        from saslnetauth.sending.state import EmbeddedState

        return EmbeddedState()
    from saslnetauth.sending.redisstate import RedisState

    return RedisState(cfg.state.url, timeout=cfg.state.timeout)


async def start_sending_listener(
    cfg: Config, server: AuthServer, store: SqlStore, sock: socket.socket
) -> list[Callable[[], object]]:
    """Serve ``[sending]`` on ``sock``: link the responder's allowed logins to their
    credential, answer Postfix; returns what ``serve`` closes at the end."""
    from saslnetauth.policy.login import Login
    from saslnetauth.sending.logins import LoginLinks
    from saslnetauth.serve.alerts import SUSPENDED

    state = open_state(cfg)
    s = cfg.sending
    links = LoginLinks(state, cfg.state.prefix, s.login_window, lowercase=cfg.lowercase_usernames)
    server.on_login_ok = links.note

    # the verdict record (saslnetauth report), when serve keeps one
    recorder = getattr(server.record, "__self__", None)
    note = getattr(recorder, "note_sending", None)

    def on_event(what: str, fields: dict[str, Any]) -> None:
        server.metrics.count_sending(what, str(fields.get("limit", "-")))
        cred = str(fields.get("credential", "main"))
        label = cred.removeprefix("app:") if cred.startswith("app:") else None
        if note is not None and what in ("defer", "suspended"):
            event = "defer" if what == "defer" else "suspend"
            note(event, str(fields["user"]), label, str(fields["client"]), str(fields["limit"]))
        if what == "suspended":
            reason = f"over {fields['limit']} {policy.cfg.suspend_after} times"
            user = str(fields["user"])
            where = Login.of(user, b"", str(fields["client"]), "smtp")
            server.alerts.fire(user, where, reason, label, event=SUSPENDED)

    policy = SendingPolicy(
        s,
        state,
        links,
        store.sending_row,
        store.suspend,
        read_version=store.sending_version,
        read_rows=store.sending_rows,
        prefix=cfg.state.prefix,
        cache_seconds=cfg.global_cache_seconds,
        on_event=on_event,
    )
    sending = SendingServer(
        policy,
        lambda: server.policy,  # the auth socket's peer checks, as reloaded
        max_connections=s.max_connections,
        idle_timeout=s.idle_timeout,
    )

    def on_reload(new: Config) -> None:  # SIGHUP: the new [sending], every user re-read
        apply_reload(cfg, new, policy, links, sending)

    server.on_reload.append(on_reload)
    await sending.start(sock)
    return [sending.close, policy.rows.close, links.close, state.close]


#: What a reload does not change (the socket, the fd budget, the state store's client).
RESTART_KEYS = (
    ("sending", "listen"),
    ("sending", "max_connections"),
    ("state", "url"),
    ("state", "prefix"),
    ("state", "timeout"),
)


def apply_reload(
    started: Config, new: Config, policy: SendingPolicy, links: LoginLinks, sending: SendingServer
) -> None:
    """The reloaded ``[sending]`` from now on: limits, ``outside_factor``, suspension,
    ``login_window``, ``idle_timeout``; every user's settings are read again. The keys
    of :data:`RESTART_KEYS` keep the values the server started with (logged)."""
    from dataclasses import replace

    changed = [
        f"[{part}] {key}"
        for part, key in RESTART_KEYS
        if getattr(getattr(started, part), key) != getattr(getattr(new, part), key)
    ]
    if changed:
        log.warning("%s", kv("reload: these need a restart, not applied", keys=", ".join(changed)))
    old = started.sending
    policy.cfg = replace(new.sending, listen=old.listen, max_connections=old.max_connections)
    links.ttl = new.sending.login_window
    sending.idle_timeout = new.sending.idle_timeout
    policy.rows.clear()
