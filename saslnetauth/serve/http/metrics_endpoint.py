"""``[serve] metrics_listen``: GET /metrics of the responder (Prometheus text
format, rendered by :mod:`saslnetauth.serve.metrics`), served over
:mod:`saslnetauth.serve.http.server` to the peers of ``[serve] metrics_allow_from``
only, and with ``[serve] metrics_token`` only to scrapes that send it
(``Authorization: Bearer``, compared in constant time; others get 401). The
gauges are read at the moment of the request from a :class:`MetricsSource` (the
auth server: this module does not know it)."""

from __future__ import annotations

import hmac
import socket
import time
from typing import Protocol

from saslnetauth.policy.rules.geoip import GeoLocator
from saslnetauth.serve.alerts import AlertRunner
from saslnetauth.serve.authsocket.brakes import Brakes
from saslnetauth.serve.authsocket.fdlimits import METRICS_MAX_CONNECTIONS
from saslnetauth.serve.decide.decider import Decider, MetricValue
from saslnetauth.serve.decide.penalty import PenaltyBox
from saslnetauth.serve.decide.repeats import RepeatMemory
from saslnetauth.serve.http.server import HttpServer, Request, Response
from saslnetauth.serve.metrics import CONTENT_TYPE, Metrics
from saslnetauth.settings import ServeConfig

__all__ = ["MetricsEndpoint", "MetricsSource"]


class MetricsSource(Protocol):
    """What /metrics reads of the responder (all read-only)."""

    @property
    def settings(self) -> ServeConfig: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def geoip(self) -> GeoLocator | None: ...
    @property
    def decider(self) -> Decider: ...
    @property
    def connections_open(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def ip_penalty(self) -> PenaltyBox: ...
    @property
    def user_penalty(self) -> PenaltyBox: ...
    @property
    def repeats(self) -> RepeatMemory: ...
    @property
    def brakes(self) -> Brakes: ...
    @property
    def alerts(self) -> AlertRunner: ...


class MetricsEndpoint:
    """The responder's metrics over HTTP."""

    def __init__(self, server: MetricsSource) -> None:
        self.server = server
        self.http = HttpServer(
            self._handle,
            name="metrics",
            allow_from=server.settings.metrics_allow_from,
            max_connections=METRICS_MAX_CONNECTIONS,
        )

    async def start(self, sock: socket.socket) -> None:
        await self.http.start(sock)

    def close(self) -> None:
        self.http.close()

    def render(self) -> str:
        """The Prometheus text of this moment."""
        server = self.server
        now = time.monotonic()
        m = server.metrics
        if server.geoip is not None:
            m.geoip = [(d.kind, d.loaded, d.build_epoch) for d in server.geoip.states() if d.path]
        gauges = (
            *_gauges(server, now),
            *_shared_brake(server.brakes),
            *_counters(server),
            *server.decider.metric_values(),
        )
        for name, text, value in gauges:
            m.set_gauge(name, text, value)
        return m.render()

    def authorized(self, request: Request) -> bool:
        token = self.server.settings.metrics_token
        if not token:
            return True  # the peer check (metrics_allow_from, the socket's mode) alone
        given = request.headers.get("authorization", "").encode("latin-1")
        return hmac.compare_digest(given, f"Bearer {token}".encode())

    async def _handle(self, request: Request) -> Response:
        if not self.authorized(request):
            headers = [("WWW-Authenticate", "Bearer")]
            return Response(401, b"unauthorized\n", content_type="text/plain", headers=headers)
        if request.method == "GET" and request.path in ("/metrics", "/"):
            return Response(200, self.render().encode(), content_type=CONTENT_TYPE)
        return Response(404, b"not found\n", content_type="text/plain")


def _gauges(server: MetricsSource, now: float) -> list[MetricValue]:
    """The responder's own gauges of this moment."""
    return [
        ("saslnetauth_connections_open", "Client connections now.", server.connections_open),
        (
            "saslnetauth_pending_verifications",
            "Verifications queued or running.",
            server.pending,
        ),
        (
            "saslnetauth_penalised_clients",
            "Clients with a brute-force penalty.",
            len(server.ip_penalty),
        ),
        (
            "saslnetauth_repeated_failures_total",
            "Failures repeating a recent wrong password of their client and user "
            "(logged repeat=yes; the brakes do not grow).",
            server.repeats.repeated,
        ),
        (
            "saslnetauth_client_most_failures",
            "Most failures counted against one client now (distinct wrong passwords: "
            "repeats do not count; many users with one password count each).",
            server.ip_penalty.most(now),
        ),
        (
            "saslnetauth_user_most_failures",
            "Most failures from outside its networks counted against one user now "
            "(distinct wrong passwords over all clients; with [serve] user_penalty).",
            server.user_penalty.most(now),
        ),
    ]


def _shared_brake(brakes: Brakes) -> list[MetricValue]:
    """The shared brake's state (only with ``[state] url``)."""
    shared = brakes.shared
    if shared is None:
        return []
    return [
        (
            "saslnetauth_shared_brake_up",
            "1 while the brute-force brake uses the counts of every host in [state] url, "
            "0 while it falls back to this host's.",
            int(shared.up),
        ),
        (
            "saslnetauth_shared_brake_fallbacks_total",
            "Times the brake fell back to this host's counts (the state store did not answer).",
            shared.fallbacks,
        ),
        (
            "saslnetauth_shared_brake_client_waits_total",
            "Logins that waited a client penalty counted over every host.",
            shared.client_waits,
        ),
        (
            "saslnetauth_shared_brake_user_waits_total",
            "Failures the user penalty lengthened, counted over every host.",
            shared.user_waits,
        ),
    ]


def _counters(server: MetricsSource) -> list[MetricValue]:
    """The responder's counters since it started."""
    stats = server.metrics.stats
    return [
        (
            "saslnetauth_connections_total",
            "Client connections accepted.",
            stats["connections"],
        ),
        (
            "saslnetauth_connections_refused_total",
            "Client connections refused (peer not allowed, per-peer or total limit).",
            stats["refused"],
        ),
        (
            "saslnetauth_overload_total",
            "Logins refused for max_pending.",
            stats["overload"],
        ),
        (
            "saslnetauth_stolen_credentials_total",
            "Correct passwords from forbidden networks.",
            stats["stolen_credentials"],
        ),
        (
            "saslnetauth_new_locations_total",
            "Allowed logins from a place new for the user or app password.",
            stats["new_location"],
        ),
        (
            "saslnetauth_retired_passwords_total",
            "Failed logins with a retired password (not counting repeats).",
            stats["retired_password"],
        ),
        ("saslnetauth_alerts_fired_total", "Alert commands started.", server.alerts.fired),
        (
            "saslnetauth_alerts_dropped_total",
            "Alerts not run: as many alert commands were running as allowed.",
            server.alerts.dropped,
        ),
    ]
