"""Counters and a latency histogram, exposed with prometheus_client (text format 0.0.4).

Served by ``saslnetauth serve`` on ``[serve] metrics_listen`` at ``/metrics``.
Label values come from a closed set (verdicts, reasons, service names the
clients send, cut to 32 printable characters), and the number of label
combinations is capped so that a client sending random service names
cannot grow memory without bound.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

#: What :meth:`Metrics.render` produces (generate_latest's classic text format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds (seconds) of the verification latency histogram.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_SERIES = 1000


def _label(value: str) -> str:
    """Printable, at most 32 characters (prometheus_client escapes the rest)."""
    return "".join(c for c in value[:32] if c.isprintable())


#: The names of :attr:`Metrics.stats`.
STATS = (
    "connections",
    "refused",
    "ok",
    "fail",
    "tempfail",
    "overload",
    "stolen_credentials",
    "new_location",
    "retired_password",
)


class Metrics:
    def __init__(self) -> None:
        self.auth: Counter[tuple[str, str, str]] = Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.gauges: dict[str, tuple[str, float]] = {}
        #: Policy endpoint requests by (command, status): a closed set of labels.
        self.policy: Counter[tuple[str, str]] = Counter()
        #: Failed logins by what the GeoIP databases knew of their address (found,
        #: unknown, unavailable: saslnetauth.policy.rules.geoip).
        self.located: Counter[str] = Counter()
        #: Logins through trusted proxies by (proxy, verdict) (docs/webmail.md).
        self.proxied: Counter[tuple[str, str]] = Counter()
        #: Sending policy answers by (result, limit): a closed set of labels
        #: (saslnetauth.sending.limits).
        self.sending: Counter[tuple[str, str]] = Counter()
        #: The GeoIP databases: (database, loaded, build time) for the gauges.
        self.geoip: list[tuple[str, bool, int | None]] = []
        #: The responder's counters (connections, verdicts, events), logged at exit too.
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def observe(self, verdict: str, reason: str, service: str, seconds: float | None) -> None:
        """Count one decision; ``seconds`` (None: no verification ran) goes into the
        latency histogram."""
        key = (verdict, reason, service or "-")
        if key in self.auth or len(self.auth) < MAX_SERIES:
            self.auth[key] += 1
        else:
            self.auth[(verdict, reason, "other")] += 1
        if seconds is None:
            return
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def count(self, verdict: str, reason: str, service: str) -> None:
        """A decision made elsewhere (Dovecot's policy report): counted, not timed."""
        key = (verdict, reason, service or "-")
        if key in self.auth or len(self.auth) < MAX_SERIES:
            self.auth[key] += 1
        else:
            self.auth[(verdict, reason, "other")] += 1

    def count_located(self, result: str) -> None:
        """A failed login located by the GeoIP databases (a closed set of results)."""
        self.located[result] += 1

    def count_proxy(self, proxy: str, verdict: str) -> None:
        """A login through a trusted proxy (addresses beyond MAX_SERIES: "other")."""
        key = (proxy, verdict)
        if key not in self.proxied and len(self.proxied) >= MAX_SERIES:
            key = ("other", verdict)
        self.proxied[key] += 1

    def count_sending(self, result: str, limit: str) -> None:
        self.sending[(result, limit)] += 1

    def count_policy(self, command: str, status: str) -> None:
        self.policy[(command, status)] += 1

    def set_gauge(self, name: str, help_text: str, value: float) -> None:
        self.gauges[name] = (help_text, value)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector interface: the families, from the counts above."""
        auth = CounterMetricFamily(
            "saslnetauth_auth",
            "Login decisions by verdict, reason and service.",
            labels=("verdict", "reason", "service"),
        )
        for (verdict, reason, service), n in sorted(self.auth.items()):
            auth.add_metric((_label(verdict), _label(reason), _label(service)), n)
        yield auth
        cumulative, buckets = 0, []
        for bound, n in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "saslnetauth_verify_seconds",
            "Time from credentials to verdict (penalty wait and verification; "
            "not the failure delay).",
            buckets=buckets,
            sum_value=self.latency_sum,
        )
        if self.policy:
            policy = CounterMetricFamily(
                "saslnetauth_policy_requests",
                "Dovecot auth policy requests by command and answer (-1 refuse, 0 allow, "
                "1 tarpit).",
                labels=("command", "status"),
            )
            for (command, status), n in sorted(self.policy.items()):
                policy.add_metric((command, status), n)
            yield policy
        if self.proxied:
            proxied = CounterMetricFamily(
                "saslnetauth_proxy_logins",
                "Logins through trusted proxies by proxy and verdict ([proxies] networks).",
                labels=("proxy", "verdict"),
            )
            for (proxy, verdict), n in sorted(self.proxied.items()):
                proxied.add_metric((_label(proxy), _label(verdict)), n)
            yield proxied
        if self.sending:
            sending = CounterMetricFamily(
                "saslnetauth_sending",
                "Sending policy answers by result (dunno, defer, suspended, unavailable) "
                "and the limit that deferred.",
                labels=("result", "limit"),
            )
            for (result, limit), n in sorted(self.sending.items()):
                sending.add_metric((result, limit), n)
            yield sending
        yield from self._collect_geoip()
        for name, (help_text, value) in sorted(self.gauges.items()):
            if name.endswith("_total"):
                counter = CounterMetricFamily(name.removesuffix("_total"), help_text)
                counter.add_metric((), value)
                yield counter
            else:
                yield GaugeMetricFamily(name, help_text, value=value)

    def _collect_geoip(self) -> Iterator[Metric]:
        if self.located:
            located = CounterMetricFamily(
                "saslnetauth_failures_located",
                "Failed logins by what the GeoIP databases knew of the address: found, "
                "unknown (not in a database), unavailable (a database not loaded).",
                labels=("result",),
            )
            for result, n in sorted(self.located.items()):
                located.add_metric((_label(result),), n)
            yield located
        if not self.geoip:
            return
        loaded = GaugeMetricFamily(
            "saslnetauth_geoip_database_loaded",
            "1 when the configured GeoIP database is loaded; 0: its terms match nothing.",
            labels=("database",),
        )
        built = GaugeMetricFamily(
            "saslnetauth_geoip_database_build_timestamp_seconds",
            "Build time of the loaded GeoIP database (its metadata's build_epoch).",
            labels=("database",),
        )
        for database, is_loaded, epoch in self.geoip:
            loaded.add_metric((database,), 1.0 if is_loaded else 0.0)
            if epoch is not None:
                built.add_metric((database,), float(epoch))
        yield loaded
        yield built

    def render(self) -> str:
        """The text exposition format (prometheus_client's rendering)."""
        return generate_latest(self._registry).decode()
