"""One client connection of ``saslnetauth serve``: the Dovecot handshake, then any
number of requests, concurrently, answered by id (docs/protocols.md section 1).

The pure codec (:mod:`saslnetauth.dovecot.protocol`) and SASL state machines
(:mod:`saslnetauth.dovecot.sasl`) do the parsing; this module does the I/O
around them and hands each login, built here once as a
:class:`~saslnetauth.policy.login.Login` (its address parsed), to its
:class:`Responder` (the auth server). Every
failure leaves at the deadline the server computes, never earlier; an OK at
once. Limits: requests in flight per connection, VERSION within
``handshake_timeout``, LOGIN exchanges expire after ``cont_timeout``, silence
after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from saslnetauth.dovecot.protocol import (
    AuthRequest,
    ClientCpid,
    ClientVersion,
    ContRequest,
    Event,
    ServerCodec,
    UnknownCommand,
    format_cont,
    format_fail,
    format_handshake,
    format_ok,
)
from saslnetauth.dovecot.sasl import (
    MECHANISMS,
    Challenge,
    Credentials,
    Mechanism,
    SaslFailure,
    Step,
    decode_base64,
    encode_base64,
    new_mechanism,
)
from saslnetauth.errors import ProtocolError
from saslnetauth.logfmt import kv
from saslnetauth.policy.deadline import wait_until
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.metrics import Metrics
from saslnetauth.settings import ServeConfig

__all__ = ["Responder", "Session"]

log = logging.getLogger("saslnetauth.serve.server")

READ_SIZE = 65536


class Responder(Protocol):
    """What a session asks of the server: its settings, its counters, and the
    decision (with the moment a failure may be answered) of a login."""

    @property
    def settings(self) -> ServeConfig: ...

    @property
    def metrics(self) -> Metrics: ...

    async def decide(self, login: Login) -> tuple[Decision, float]: ...

    def refuse(
        self, reason: Reason, login: Login, detail: str | None = None, **fields: object
    ) -> tuple[Decision, float]: ...


def _login(auth: AuthRequest, user: str | None = None) -> Login:
    """The login of a request the responder refuses itself (no password)."""
    return Login.of(user or "", b"", auth.rip, auth.service, real_rip=auth.real_rip)


@dataclass
class _Exchange:
    """A request whose mechanism waits for the client's next CONT."""

    auth: AuthRequest
    mech: Mechanism
    expiry: asyncio.TimerHandle | None = None


class Session:
    """One client connection."""

    def __init__(
        self,
        server: Responder,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cuid: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.cuid = cuid
        self.codec = ServerCodec()
        self.exchanges: dict[int, _Exchange] = {}  # waiting for CONT
        self.running: set[int] = set()  # ids being verified or delayed
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.draining = False  # the server is stopping
        self.last_active = asyncio.get_running_loop().time()  # last byte in or out
        # one timer per connection for the handshake and idle timeouts (not one per
        # read): it looks at last_active when it fires and re-arms itself
        self._watchdog: asyncio.TimerHandle | None = None

    # -- I/O ------------------------------------------------------------------------

    async def run(self) -> None:
        mechs = [(name, flags) for name, flags in MECHANISMS.items()]
        self.send(format_handshake(mechs, cuid=self.cuid))
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.server.settings.handshake_timeout, self._on_watchdog)
        while not self.closed:
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            self.last_active = loop.time()
            try:
                events = self.codec.receive_data(data)
            except ProtocolError as exc:
                log.warning(
                    "%s", kv("client protocol error, disconnecting", cuid=self.cuid, error=str(exc))
                )
                return
            for event in events:
                try:
                    self.handle(event)
                except ProtocolError as exc:
                    log.warning(
                        "%s",
                        kv("client protocol error, disconnecting", cuid=self.cuid, error=str(exc)),
                    )
                    return
                if self.closed:
                    return

    def _on_watchdog(self) -> None:
        """The handshake deadline, or a look at whether the connection went idle:
        close it, or come back when it could be."""
        self._watchdog = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.codec.version is None:
            reason = "handshake_timeout"
        else:
            idle = self.server.settings.idle_timeout
            if idle <= 0:  # no idle timeout (a reload may bring one)
                self._watchdog = loop.call_at(now + 60.0, self._on_watchdog)
                return
            if self.exchanges or self.running:  # requests in flight: not idle
                self._watchdog = loop.call_at(now + idle, self._on_watchdog)
                return
            if now - self.last_active < idle:
                when = max(self.last_active + idle, now + 0.05)
                self._watchdog = loop.call_at(when, self._on_watchdog)
                return
            reason = "idle"
        log.info("%s", kv("connection closed", cuid=self.cuid, reason=reason))
        self.close()  # the read in run() sees the end of the stream

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)
            self.last_active = asyncio.get_running_loop().time()

    def drain(self) -> None:
        """The server stops: finish the requests in flight, take no new one, then close."""
        self.draining = True
        self.close_if_idle()

    def close_if_idle(self) -> None:
        if self.draining and not self.exchanges and not self.running:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for ex in self.exchanges.values():
            if ex.expiry is not None:
                ex.expiry.cancel()
        self.exchanges.clear()
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()

    # -- protocol ---------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, AuthRequest):
            self.on_auth(event)
        elif isinstance(event, ContRequest):
            self.on_cont(event)
        elif isinstance(event, ClientVersion | ClientCpid):
            return
        elif isinstance(event, UnknownCommand):
            log.debug("%s", kv("unknown command ignored", cuid=self.cuid, command=event.name))

    def on_auth(self, auth: AuthRequest) -> None:
        if auth.id in self.exchanges or auth.id in self.running:
            raise ProtocolError(f"duplicate request id {auth.id}")
        if self.draining:  # unanswered: the connection closes, a temporary failure
            log.info("%s", kv("request not taken: stopping", cuid=self.cuid, id=auth.id))
            self.close_if_idle()
            return
        limit = self.server.settings.max_requests_per_connection
        if len(self.exchanges) + len(self.running) >= limit:
            raise ProtocolError(f"more than {limit} requests in flight")
        mech = new_mechanism(auth.mech)
        if mech is None:
            decision, deadline = self.server.refuse(
                Reason.UNSUPPORTED_MECHANISM, _login(auth), mech=auth.mech
            )
            self.spawn(
                auth.id,
                self.reply(auth.id, decision, deadline, "Unsupported authentication mechanism"),
            )
            return
        initial: bytes | None = None
        if auth.resp is not None:
            initial = decode_base64(auth.resp)
            if initial is None:
                self.finish_failed(auth, SaslFailure("invalid base64 in initial response"))
                return
        self.advance(auth, mech, mech.start(initial))

    def on_cont(self, cont: ContRequest) -> None:
        ex = self.exchanges.pop(cont.id, None)
        if ex is None:
            if cont.id in self.running:
                raise ProtocolError(f"CONT for request {cont.id} that is not waiting for one")
            self.send(format_fail(cont.id, None, reason=self.server.settings.fail_reason))
            return
        if ex.expiry is not None:
            ex.expiry.cancel()
        data = decode_base64(cont.data)
        if data is None:
            self.finish_failed(ex.auth, SaslFailure("invalid base64 in continued response"))
            return
        self.advance(ex.auth, ex.mech, ex.mech.step(data))

    def advance(self, auth: AuthRequest, mech: Mechanism, step: Step) -> None:
        if isinstance(step, Challenge):
            ex = _Exchange(auth, mech)
            ex.expiry = asyncio.get_running_loop().call_later(
                self.server.settings.cont_timeout, self.expire, auth.id
            )
            self.exchanges[auth.id] = ex
            self.send(format_cont(auth.id, encode_base64(step.data)))
        elif isinstance(step, Credentials):
            self.spawn(auth.id, self.verify(auth, step, time.monotonic()))
        else:
            self.finish_failed(auth, step)

    def expire(self, req_id: int) -> None:
        ex = self.exchanges.pop(req_id, None)
        if ex is None:
            return
        decision, deadline = self.server.refuse(Reason.TIMEOUT, _login(ex.auth))
        self.spawn(req_id, self.reply(req_id, decision, deadline))

    def spawn(self, req_id: int, coro: Coroutine[Any, Any, None]) -> None:
        self.running.add(req_id)
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            self.running.discard(req_id)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s", kv("request failed", cuid=self.cuid, error=repr(t.exception())))
            self.close_if_idle()

        task.add_done_callback(done)

    def finish_failed(self, auth: AuthRequest, failure: SaslFailure) -> None:
        """A malformed exchange: logged with its reason, answered like any failure."""
        decision, deadline = self.server.refuse(
            Reason.SASL_ERROR, _login(auth, failure.username), failure.reason
        )
        self.spawn(auth.id, self.reply(auth.id, decision, deadline))

    async def verify(self, auth: AuthRequest, creds: Credentials, arrival: float) -> None:
        login = Login.of(
            creds.username,
            creds.password,
            auth.rip,
            auth.service,
            real_rip=auth.real_rip,  # proxies hook
            arrival=arrival,
        )
        decision, deadline = await self.server.decide(login)
        await self.reply(auth.id, decision, deadline)

    async def reply(
        self, req_id: int, decision: Decision, deadline: float, reason: str | None = None
    ) -> None:
        """OK at once; any failure at its deadline, never earlier."""
        stats = self.server.metrics.stats
        if decision.verdict is Verdict.OK:
            stats["ok"] += 1
            self.send(format_ok(req_id, decision.user))
        else:
            stats["tempfail" if decision.verdict is Verdict.TEMPFAIL else "fail"] += 1
            await wait_until(deadline)
            self.send(
                format_fail(
                    req_id,
                    decision.user or None,
                    temp=decision.verdict is Verdict.TEMPFAIL,
                    reason=self.server.settings.fail_reason if reason is None else reason,
                )
            )
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()
