"""The auth-socket responder: asyncio around the pure protocol codec.

Each client connection is a :class:`saslnetauth.serve.authsocket.session.Session`: the
Dovecot handshake at once, then any number of requests. Credentials go
to the decision engine in worker processes (:mod:`saslnetauth.serve.decide.workers`),
so the event loop never blocks on hashing or on the database, and every
core works. Every failure is answered at the fixed deadline of
:mod:`saslnetauth.policy.deadline` (measured from the request's arrival; it holds
only that request) and logged by :func:`saslnetauth.events.authlog.log_decision`,
whether the engine decided it or the responder did (SASL error, timeout,
overload, unsupported mechanism).

Who may connect is checked before the handshake (:mod:`saslnetauth.serve.authsocket.access`,
:mod:`saslnetauth.serve.authsocket.admission`).
Limits: line length (:data:`saslnetauth.dovecot.protocol.MAX_LINE`), requests in
flight per connection, connections (the mail servers' users: the file
descriptors left for them, :mod:`saslnetauth.serve.authsocket.fdlimits`; every other
peer: ``max_connections`` and each peer's share of them), the
handshake timeout (VERSION must come within ``handshake_timeout``),
verifications pending over all clients (beyond: TEMPFAIL), LOGIN exchanges
waiting for CONT (expire), the idle timeout. SIGTERM/SIGINT stop accepting,
answer the requests in flight, close every connection and exit (idle
connections close at once); SIGHUP reloads the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from saslnetauth.config import Config
from saslnetauth.errors import BackendError
from saslnetauth.events.authlog import Record, account
from saslnetauth.logfmt import kv
from saslnetauth.policy.deadline import FailureDeadline
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.geoip import GeoLocator
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.alerts import AlertRunner
from saslnetauth.serve.authsocket import fdlimits
from saslnetauth.serve.authsocket.acceptor import Acceptor
from saslnetauth.serve.authsocket.access import PeerPolicy, identify, with_account_groups
from saslnetauth.serve.authsocket.admission import Admission
from saslnetauth.serve.authsocket.brakes import Brakes
from saslnetauth.serve.authsocket.listeners import describe, sd_notify
from saslnetauth.serve.authsocket.session import Session
from saslnetauth.serve.decide.decider import Decider
from saslnetauth.serve.decide.penalty import client_bucket
from saslnetauth.serve.http.metrics_endpoint import MetricsEndpoint
from saslnetauth.serve.metrics import Metrics
from saslnetauth.settings import GeoipConfig, ServeConfig

__all__ = ["AuthServer"]

log = logging.getLogger("saslnetauth.serve.server")

#: Seconds SIGTERM waits for requests in flight before closing connections.
DRAIN_TIMEOUT = 15.0
#: Seconds before a failure's deadline by which a retired-password check must end
#: (the verdict's way back to the responder).
RETIRED_MARGIN = 0.01
#: Seconds the listeners may take to see their closed connections go.
CLOSE_TIMEOUT = 2.0


class AuthServer:
    """Serves the Dovecot auth-client protocol on the given listening sockets."""

    def __init__(
        self,
        decider: Decider,
        settings: ServeConfig,
        *,
        reload: Callable[[], tuple[Config, ServeConfig]] | None = None,
        measured: float = 0.0,
        record: Record | None = None,
        geoip: GeoipConfig | None = None,
        mail_connections: int = 0,
    ) -> None:
        self.decider = decider
        #: Most connections of the mail servers' users (from the file descriptor
        #: limit, :func:`saslnetauth.serve.authsocket.fdlimits.plan`; 0 = no bound of ours).
        self.mail_connections = mail_connections
        #: The verdict record (``saslnetauth report``) for the failures decided here;
        #: the engine records its own decisions in the workers.
        self.record = record
        #: Told every OK and its client address (the sending limits' login links,
        #: saslnetauth.sending.logins; returns at once, never raises).
        self.on_login_ok: Callable[[Decision, str | None], None] | None = None
        #: called with the new configuration after each successful reload (SIGHUP):
        #: other listeners' settings and caches
        self.on_reload: list[Callable[[Config], None]] = []
        #: Slowest verification measured at start (seconds; saslnetauth.policy.deadline.calibrate).
        self.measured = measured
        self.settings = settings
        self._reload_cb = reload
        self._acceptors: list[Acceptor] = []
        self._sessions: set[Session] = set()
        self.admission = Admission()  # the open connections by peer
        self._cuids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()
        self.pending = 0  # verifications queued or running, over all clients
        self._stopping: asyncio.Event | None = None
        self._all_closed: asyncio.Event | None = None  # set while stopping, when no session is left
        self.metrics = Metrics()
        self._metrics_http: MetricsEndpoint | None = None
        self.brakes = Brakes(settings)
        self.ip_penalty, self.user_penalty = self.brakes.ip, self.brakes.user
        self.repeats = self.brakes.repeats
        #: This process's GeoIP databases: the policy endpoint's lookups and the gauges
        #: of /metrics (the workers hold their own).
        self.geoip = GeoLocator(geoip, watch=True) if geoip is not None else None
        self._configure(settings)

    def _configure(self, settings: ServeConfig, policy: PeerPolicy | None = None) -> None:
        """(Re)build what depends on the settings; penalties survive a reload."""
        self.settings = settings
        self.policy = policy or PeerPolicy.from_settings(settings)
        self.brakes.retune(settings)  # a reload keeps the failures counted so far
        old_alerts = getattr(self, "alerts", None)
        self.alerts = AlertRunner(list(settings.alert_command), timeout=settings.alert_timeout)
        if old_alerts is not None:  # counters, not gauges: they never go back
            self.alerts.fired, self.alerts.dropped = old_alerts.fired, old_alerts.dropped
        old_deadline = getattr(self, "deadline", None)
        self.deadline = FailureDeadline(settings.failure_delay, self.measured)
        if old_deadline is not None:
            self.deadline.carry_over(old_deadline)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket]) -> None:
        self._stopping = asyncio.Event()
        for sock in sockets:
            acceptor = Acceptor(sock, self._on_connect, name="auth")
            acceptor.start()
            self._acceptors.append(acceptor)
            log.info("%s", kv("listening", on=describe(sock)))

    @property
    def stats(self) -> dict[str, int]:
        """The responder's counters (:attr:`Metrics.stats`)."""
        return self.metrics.stats

    @property
    def connections_open(self) -> int:
        return len(self._sessions)

    async def start_metrics(self, sock: socket.socket) -> None:
        """Serve GET /metrics on ``sock`` (:mod:`.metrics_endpoint`)."""
        self._metrics_http = MetricsEndpoint(self)
        await self._metrics_http.start(sock)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            log.info("stopping: no new connections, draining requests in flight")
            self._stopping.set()

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT (or request_stop), then drain and close."""
        assert self._stopping is not None
        sd_notify("READY=1")
        log.info(
            "%s",
            kv(
                "ready",
                workers=self.decider.describe(),
                failure_delay=self.settings.failure_delay,
                failure_floor=round(self.deadline.floor(), 4),
                max_pending=self.settings.max_pending,
                mail_server_connections=self.mail_connections or "-",
            ),
        )
        await self._stopping.wait()
        sd_notify("STOPPING=1")
        await self.shutdown()

    async def shutdown(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop accepting, answer the requests in flight, close every connection.

        An idle connection closes at once, a busy one when its last request is
        answered (new requests on it are not taken: the client sees the connection
        close, a temporary failure); then the rest are closed, and their
        sessions are given :data:`CLOSE_TIMEOUT` to go."""
        if self._metrics_http is not None:
            self._metrics_http.close()
        for acceptor in self._acceptors:
            acceptor.close()
        self._all_closed = asyncio.Event()
        for session in list(self._sessions):
            session.drain()
        if self._sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), drain_timeout)
        if self._background:  # a reload in progress finishes before the workers stop
            await asyncio.wait(list(self._background), timeout=drain_timeout)
        await self.alerts.drain(timeout=drain_timeout)
        for session in list(self._sessions):
            session.close()
        if self._sessions:  # let their closing callbacks run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), CLOSE_TIMEOUT)
        await self.decider.close()
        if self.geoip is not None:
            await asyncio.to_thread(self.geoip.close)
        log.info("%s", kv("stopped", **self.stats))

    def reload(self) -> None:
        if self._stopping is not None and self._stopping.is_set():
            log.info("reload ignored: stopping")
            return
        if self._reload_cb is not None:
            task = asyncio.ensure_future(self._reload())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reload(self) -> None:
        assert self._reload_cb is not None
        from saslnetauth.runtime import measure_verification

        try:
            cfg, settings = self._reload_cb()
            measured = await asyncio.to_thread(measure_verification, cfg)
            policy = PeerPolicy.from_settings(settings)
            mail = fdlimits.plan(cfg).mail_servers if self.mail_connections else 0
            await self.decider.reload(cfg)
        except Exception as exc:
            log.error("%s", kv("reload failed, keeping the old configuration", error=str(exc)))
            return
        if self.geoip is not None:
            old, self.geoip = self.geoip, await asyncio.to_thread(GeoLocator, cfg.geoip, watch=True)
            await asyncio.to_thread(old.close)
        self.measured = measured
        self.mail_connections = mail
        self._configure(settings, policy)
        for hook in self.on_reload:
            hook(cfg)
        log.info(
            "%s",
            kv(
                "configuration reloaded",
                failure_delay=settings.failure_delay,
                failure_floor=round(self.deadline.floor(), 4),
            ),
        )

    # -- connections --------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._all_closed is not None or (self._stopping is not None and self._stopping.is_set()):
            writer.close()
            return
        peer = identify(writer.get_extra_info("socket"), writer.get_extra_info("peername"))
        if self.policy.needs_groups(peer):  # a TCP peer's account: the name service
            peer = await with_account_groups(peer)
        settings = self.settings
        refusal = self.admission.refusal(
            peer,
            self.policy,
            max_connections=settings.max_connections,
            mail_connections=self.mail_connections,
        )
        if refusal is not None:
            self.stats["refused"] += 1
            writer.close()
            return
        session = Session(self, reader, writer, next(self._cuids))
        self._sessions.add(session)
        mail = self.policy.mail_server(peer)  # kept: a reload may change the policy
        self.admission.opened(peer, mail=mail)
        self.stats["connections"] += 1
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self.admission.closed(peer, mail=mail)
            session.close()
            if self._all_closed is not None and not self._sessions:
                self._all_closed.set()

    # -- verification ----------------------------------------------------------------

    async def decide(self, login: Login) -> tuple[Decision, float]:
        """Run the engine off the event loop; returns the decision and the monotonic
        time at which it may be answered if it is not OK (the fixed failure deadline
        from ``login.arrival``, with the penalties). The client's penalty is waited out
        first, whatever the outcome will be, like Dovecot's auth_penalty."""
        arrival = login.arrival
        key = client_bucket(login.address, ipv6_prefix=self.settings.penalty_ipv6_prefix)
        clean = True  # the shared store counted no failure of this client
        if self.brakes.shared is None:
            wait = self.ip_penalty.delay(key, arrival)
        else:  # every host's count too, within its timeout (never in the way)
            wait, clean = await self.brakes.client_wait(key, arrival)
        if wait > 0:
            await asyncio.sleep(wait)
        # the penalties this failure waits were read above, before the password was
        # looked at: a repeat changes only what later requests wait
        seen = self.brakes.seen(key, login)
        # a wrong password may cost one more hash (a retired password?) only while a
        # worker is free, and only if it ends before this failure's deadline
        retired_by = 0.0
        if self.pending < self.decider.size:
            retired_by = self.deadline.at(arrival, wait=wait) - RETIRED_MARGIN
        login = replace(login, repeat=seen.client, retired_by=retired_by)
        decision = await self._run_engine(login, key)
        now = time.monotonic()
        if decision.verify_seconds > 0:
            self.deadline.observe(decision.verify_seconds, now)
        self.metrics.observe(
            decision.verdict.value, decision.reason.value, login.service, now - arrival
        )
        if decision.geoip is not None:
            self.metrics.count_located(decision.geoip)
        if decision.proxy is not None:  # proxies hook
            self.metrics.count_proxy(decision.proxy, decision.verdict.value)
        if decision.ok and self.on_login_ok is not None:  # the sending limits' login links
            self.on_login_ok(decision, login.rip)
        braked = self.settings.user_penalty
        if self.brakes.shared is None:
            extra = self.brakes.after(decision, login, key, seen, now, user_penalty=braked)
        else:
            extra = await self.brakes.after_shared(
                decision, login, key, seen, now, user_penalty=braked, clean=clean
            )
        self._alert(decision, login, repeat=seen.client)
        return decision, self.deadline.at(arrival, wait=wait, extra=extra)

    def _alert(self, decision: Decision, login: Login, *, repeat: bool) -> None:
        """Count and alert what an admin should hear of: an OK from a new place, a
        retired password (not its repeats), a correct password from a forbidden network."""
        if decision.verdict is Verdict.OK:
            if decision.new_location is not None:
                self.stats["new_location"] += 1
                self.alerts.new_location(decision, login)
        elif decision.verdict is Verdict.FAIL:
            if decision.reason is Reason.RETIRED_PASSWORD and not repeat:
                self.stats["retired_password"] += 1
                self.alerts.retired_password(decision, login)
            if decision.credentials_valid and decision.reason in (
                Reason.NETWORK,
                Reason.NO_NETWORK_RULES,
            ):
                self.stats["stolen_credentials"] += 1
                self.alerts.stolen_credentials(decision, login)

    def refuse(
        self, reason: Reason, login: Login, detail: str | None = None, **fields: object
    ) -> tuple[Decision, float]:
        """A failure the responder decides itself: logged and counted like the
        engine's decisions; returns it with its deadline (from now)."""
        now = time.monotonic()
        decision = Decision(Verdict.FAIL, reason, login.user, detail=detail)
        account(decision, login, self.record, fields)
        self.metrics.observe(decision.verdict.value, reason.value, login.service, None)
        return decision, self.deadline.at(now)

    async def _run_engine(self, login: Login, key: tuple[int, int] | None = None) -> Decision:
        """The engine in a worker, within the pending bound and ``request_timeout``
        from the request's arrival; past ``max_pending``, a place in the reserve of
        clients with a recent success (``key``: :meth:`Brakes.take_reserve`)."""
        limit = self.settings.max_pending
        reserved = self.pending >= limit
        if reserved and not self.brakes.take_reserve(key, self.pending, limit):
            self.stats["overload"] += 1
            decision = Decision(
                Verdict.TEMPFAIL, Reason.OVERLOAD, login.user, detail="max_pending reached"
            )
            account(decision, login, self.record, {"pending": self.pending})
            return decision
        self.pending += 1
        remaining = login.arrival + self.settings.request_timeout - time.monotonic()
        try:
            # each decider keeps the time limit itself, with one timer for all its
            # requests rather than one per login
            return await self.decider.decide(login, timeout=max(remaining, 0.001))
        except Exception as exc:  # fail closed
            if isinstance(exc, TimeoutError):
                detail = "verification timed out"
            else:
                detail = str(exc) if isinstance(exc, BackendError) else repr(exc)
            decision = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, login.user, detail=detail)
            account(decision, login, self.record)
            return decision
        finally:
            self.pending -= 1
            if reserved:
                self.brakes.release_reserve(key)
