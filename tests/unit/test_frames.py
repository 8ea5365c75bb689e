"""The frames between the responder and its decision workers (serve/frames.py)."""

from __future__ import annotations

import dataclasses

from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.decide.frames import cut_frames, decision_from, decision_message, frame


def _every_field_set() -> Decision:
    """A Decision whose every field differs from its default."""
    d = Decision(Verdict.FAIL, Reason.NETWORK, "alice")
    values: dict[str, object] = {
        "credentials_valid": True,
        "matched": "user network 192.0.2.0/24 (all services)",
        "detail": "detail",
        "network_ok": False,
        "verify_seconds": 0.25,
        "country": "DE",
        "asn": 3320,
        "geoip": "found",
        "expires": 1_900_000_000.0,
        "credential": "phone",
        "new_location": "network,country",
        "proxy": "127.0.0.1",
        "admitted": "outside",
    }
    names = {f.name for f in dataclasses.fields(Decision)} - {"verdict", "reason", "user"}
    assert names == set(values), "a new Decision field: give it a value here"
    return dataclasses.replace(d, **values)  # type: ignore[arg-type]


def test_a_decision_crosses_the_worker_link_whole() -> None:
    """Every field of the worker's decision reaches the server in its place (a field
    list written by hand once left out `expires`, and the app password's label
    arrived as the grant's expiry: the alert named no credential)."""
    d = _every_field_set()
    buf = bytearray(frame(decision_message(7, d)))
    (msg,) = cut_frames(buf)
    assert msg[0] == 7 and buf == bytearray()
    assert decision_from(msg) == d
