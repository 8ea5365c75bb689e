"""Counters and a latency histogram in the Prometheus text format (version 0.0.4). Pure.

Served by ``saslnetauth serve`` on ``[serve] metrics_listen`` at ``/metrics``.
Label values come from a closed set (verdicts, reasons, service names the
clients send, cut to 32 printable characters), and the number of label
combinations is capped so that a client sending random service names
cannot grow memory without bound.
"""

from __future__ import annotations

import bisect
from collections import Counter

__all__ = ["Metrics"]

#: Upper bounds (seconds) of the verification latency histogram.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_SERIES = 1000


def _label(value: str) -> str:
    value = "".join(c for c in value[:32] if c.isprintable())
    return value.replace("\\", "\\\\").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self.auth: Counter[tuple[str, str, str]] = Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.gauges: dict[str, tuple[str, float]] = {}

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

    def set_gauge(self, name: str, help_text: str, value: float) -> None:
        self.gauges[name] = (help_text, value)

    def render(self) -> str:
        out = [
            "# HELP saslnetauth_auth_total Login decisions by verdict, reason and service.",
            "# TYPE saslnetauth_auth_total counter",
        ]
        for (verdict, reason, service), n in sorted(self.auth.items()):
            out.append(
                f'saslnetauth_auth_total{{verdict="{_label(verdict)}",reason="{_label(reason)}",'
                f'service="{_label(service)}"}} {n}'
            )
        out += [
            "# HELP saslnetauth_verify_seconds Time from credentials to verdict "
            "(penalty wait and verification; not the failure delay).",
            "# TYPE saslnetauth_verify_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'saslnetauth_verify_seconds_bucket{{le="{le}"}} {cumulative}')
        out.append(f"saslnetauth_verify_seconds_sum {self.latency_sum:.6f}")
        out.append(f"saslnetauth_verify_seconds_count {self.latency_count}")
        for name, (help_text, value) in sorted(self.gauges.items()):
            kind = "counter" if name.endswith("_total") else "gauge"
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(out) + "\n"
