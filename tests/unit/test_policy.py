"""The policy endpoint's decision and request parsing: pure, no sockets."""

from __future__ import annotations

import json

import pytest

from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet
from saslnetauth.policy.verdict import Reason
from saslnetauth.serve.http.policyrequest import PolicyRequest, decide_network, parse_request

GLOBAL = RuleSet([NetworkRule.parse("198.51.100.0/24", ["imap"])])
ALICE = UserRecord(
    id=1,
    name="alice",
    password_hash=None,
    enabled=True,
    rules=RuleSet([NetworkRule.parse("192.0.2.0/24", scope="user")]),
)
LOCAL = UserRecord(
    id=3,
    name="carol",
    password_hash=None,
    enabled=True,
    rules=RuleSet([NetworkRule.parse("local", scope="user")]),
)
BOB = UserRecord(id=2, name="bob", password_hash=None, enabled=False, rules=ALICE.rules)


NOW = 1_800_000_000.0


def req(remote: str, protocol: str = "imap") -> PolicyRequest:
    return PolicyRequest(login="x", remote=remote, protocol=protocol)


@pytest.mark.parametrize(
    ("user", "remote", "protocol", "unknown", "expected"),
    [
        (ALICE, "192.0.2.9", "imap", "global", (True, Reason.OK)),
        (ALICE, "::ffff:192.0.2.9", "smtp", "global", (True, Reason.OK)),
        (ALICE, "198.51.100.9", "imap", "global", (True, Reason.OK)),  # global, for imap
        (ALICE, "198.51.100.9", "pop3", "global", (False, Reason.NETWORK)),
        (ALICE, "203.0.113.9", "imap", "global", (False, Reason.NETWORK)),
        (BOB, "192.0.2.9", "imap", "global", (False, Reason.DISABLED)),
        (None, "198.51.100.9", "imap", "global", (True, Reason.OK)),
        (None, "198.51.100.9", "pop3", "global", (False, Reason.NO_NETWORK_RULES)),
        (None, "198.51.100.9", "imap", "reject", (False, Reason.UNKNOWN_USER)),
        # no address, or one that does not parse: only `local` matches (as in the engine)
        (ALICE, "", "imap", "global", (False, Reason.NETWORK)),
        (ALICE, "192.0.2", "imap", "global", (False, Reason.NETWORK)),
        (LOCAL, "", "imap", "global", (True, Reason.OK)),
        (LOCAL, "192.0.2", "imap", "global", (True, Reason.OK)),
        (LOCAL, "192.0.2.9", "imap", "global", (False, Reason.NETWORK)),
    ],
)
def test_decide_network(
    user: UserRecord | None, remote: str, protocol: str, unknown: str, expected: object
) -> None:
    assert decide_network(user, GLOBAL, req(remote, protocol), unknown, now=NOW) == expected


def test_decide_network_applies_the_main_password_services() -> None:
    """Dovecot's passdb checks the main password: where it may not log in, refused."""
    from dataclasses import replace

    smtp_only = replace(ALICE, main_password_services="smtp")
    assert decide_network(smtp_only, GLOBAL, req("192.0.2.9", "smtp"), "global", now=NOW) == (
        True,
        Reason.OK,
    )
    assert decide_network(smtp_only, GLOBAL, req("192.0.2.9", "imap"), "global", now=NOW) == (
        False,
        Reason.APP_PASSWORD_REQUIRED,
    )
    # a forbidden network stays a network refusal
    assert decide_network(smtp_only, GLOBAL, req("203.0.113.9"), "global", now=NOW)[1] is (
        Reason.NETWORK
    )
    # the configured default for users without their own; unknown users are not affected
    only = frozenset({"smtp"})
    assert decide_network(ALICE, GLOBAL, req("192.0.2.9"), "global", now=NOW, main_default=only)[
        1
    ] is (Reason.APP_PASSWORD_REQUIRED)
    assert decide_network(None, GLOBAL, req("198.51.100.9"), "global", now=NOW, main_default=only)[
        0
    ]


def test_decide_network_ignores_expired_grants() -> None:
    """The policy endpoint's network half honours expiry like the engine: a grant
    matches before its end and is no network at all from then on."""
    dave = UserRecord(
        id=4,
        name="dave",
        password_hash=None,
        enabled=True,
        rules=RuleSet([NetworkRule.parse("203.0.113.0/24", scope="user", expires=NOW + 60)]),
    )
    assert decide_network(dave, GLOBAL, req("203.0.113.5"), "global", now=NOW) == (
        True,
        Reason.OK,
    )
    # at its end the grant is gone; only the global imap network is left
    assert decide_network(dave, GLOBAL, req("203.0.113.5"), "global", now=NOW + 60) == (
        False,
        Reason.NETWORK,
    )
    assert decide_network(dave, GLOBAL, req("203.0.113.5", "smtp"), "global", now=NOW + 60) == (
        False,
        Reason.NO_NETWORK_RULES,
    )
    expiring_global = RuleSet([NetworkRule.parse("198.51.100.0/24", expires=NOW + 1)])
    assert decide_network(None, expiring_global, req("198.51.100.7"), "global", now=NOW)[0]
    assert not decide_network(None, expiring_global, req("198.51.100.7"), "global", now=NOW + 1)[0]


def test_parse_dovecot_23_and_24_bodies() -> None:
    v24 = {
        "device_id": "",
        "fail_type": "credentials",
        "login": "alice",
        "protocol": "IMAP",
        "pwhash": "0a42",
        "remote": "192.0.2.9",
        "session_id": "",
        "tls": False,
        "success": False,
        "policy_reject": False,
    }
    r = parse_request(json.dumps(v24).encode())
    assert (r.login, r.remote, r.protocol, r.success, r.fail_type) == (
        "alice",
        "192.0.2.9",
        "imap",
        False,
        "credentials",
    )
    v23 = {k: v for k, v in v24.items() if k not in ("fail_type", "success", "policy_reject")}
    r = parse_request(json.dumps(v23).encode())
    assert (r.success, r.policy_reject, r.fail_type) == (None, False, None)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'"x"', b"{", b'{"login": 5}', b'{"login": "a\\tb"}', b'{"remote": ["x"]}'],
)
def test_parse_refuses(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_request(body)


def test_parse_bounds_fields() -> None:
    with pytest.raises(ValueError):
        parse_request(json.dumps({"login": "a" * 513}).encode())
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(ValueError):
        parse_request(deep)


def test_peer_allowed() -> None:
    import ipaddress

    from saslnetauth.serve.http.server import LOOPBACK, peer_allowed

    nets = [ipaddress.ip_network(n) for n in LOOPBACK]
    assert peer_allowed(("127.0.0.1", 1), nets)
    assert peer_allowed(("::1", 1, 0, 0), nets)
    assert peer_allowed(("::ffff:127.0.0.5", 1, 0, 0), nets)  # mapped loopback
    assert peer_allowed("", nets)  # a UNIX peer: the socket's mode decides
    for peer in (("192.0.2.1", 1), ("::ffff:192.0.2.1", 1, 0, 0), ("fe80::1%eth0", 1, 0, 2)):
        assert not peer_allowed(peer, nets)
    assert not peer_allowed(("not-an-ip", 1), nets)


def test_decide_network_refuses_a_suspended_main_password() -> None:
    """docs/sending.md: suspended for sending too much, refused like a disabled user."""
    from dataclasses import replace

    got = decide_network(
        replace(ALICE, suspended=True), GLOBAL, req("192.0.2.9"), "global", now=NOW
    )
    assert got == (False, Reason.SUSPENDED)
