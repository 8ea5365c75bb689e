"""Reading a Prometheus exposition in tests: parsed by prometheus_client, so that
label order and number format stay the renderer's business and the values ours."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by prometheus_client (label order and
    number format are the renderer's business, the values are ours)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def auth(verdict: str, reason: str, service: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"verdict": verdict, "reason": reason, "service": service}
    return ("saslnetauth_auth_total", frozenset(labels.items()))


def plain(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))
