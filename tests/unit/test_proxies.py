"""Trusted proxies (saslnetauth.policy.proxies) and the webmail session binding's
pure half (saslnetauth.policy.binding): which address is judged, and what a
decision becomes through a proxy."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saslnetauth.config import load_config
from saslnetauth.errors import ConfigError
from saslnetauth.policy.binding import Binding, SessionBinder, fingerprint, settle_unbound
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.proxies import Case, ProxyNetworks, Route
from saslnetauth.policy.rules.networks import parse_network
from saslnetauth.policy.verdict import Decision, Reason, Verdict

PROXIES = ProxyNetworks.parse(["127.0.0.0/8", "::1/128", "192.0.2.10/32 services=smtp"])


@pytest.mark.parametrize(
    ("rip", "real_rip", "service", "expected"),
    [
        ("203.0.113.9", None, "imap", Route(Case.DIRECT, "203.0.113.9")),
        ("203.0.113.9", "203.0.113.9", "imap", Route(Case.DIRECT, "203.0.113.9")),
        ("203.0.113.9", "127.0.0.1", "imap", Route(Case.FORWARDED, "203.0.113.9", "127.0.0.1")),
        ("::ffff:203.0.113.9", "::1", "imap", Route(Case.FORWARDED, "203.0.113.9", "::1")),
        ("203.0.113.9", "198.51.100.1", "imap", Route(Case.UNTRUSTED_FORWARD, "198.51.100.1")),
        ("127.0.0.1", None, "smtp", Route(Case.PROXY_ONLY, None, "127.0.0.1")),
        # Dovecot 2.4's Lua request: real_remote_ip equal to remote_ip, nothing forwarded
        ("127.0.0.1", "127.0.0.1", "imap", Route(Case.PROXY_ONLY, None, "127.0.0.1")),
        # a forwarded address that is a proxy's own is no client address
        ("127.0.0.5", "127.0.0.1", "imap", Route(Case.PROXY_ONLY, None, "127.0.0.1")),
        (None, "127.0.0.1", "imap", Route(Case.PROXY_ONLY, None, "127.0.0.1")),
        # a proxy for smtp only is a client address for imap
        ("192.0.2.10", None, "imap", Route(Case.DIRECT, "192.0.2.10")),
        ("192.0.2.10", None, "smtp", Route(Case.PROXY_ONLY, None, "192.0.2.10")),
        ("203.0.113.9", "192.0.2.10", "imap", Route(Case.UNTRUSTED_FORWARD, "192.0.2.10")),
        # an unparsable connecting address is no proxy: judged by it (as absent)
        ("203.0.113.9", "junk", "imap", Route(Case.UNTRUSTED_FORWARD, "junk")),
        (None, None, "imap", Route(Case.DIRECT, None)),
    ],
)
def test_route(rip: str | None, real_rip: str | None, service: str, expected: Route) -> None:
    assert PROXIES.route(rip, real_rip, service) == expected


def test_without_proxies_a_forwarded_address_is_judged_by_the_connecting_one() -> None:
    none = ProxyNetworks()
    assert not none
    assert none.route("203.0.113.9", "127.0.0.1", "imap") == Route(
        Case.UNTRUSTED_FORWARD, "127.0.0.1"
    )
    assert none.route("127.0.0.1", None, "smtp") == Route(Case.DIRECT, "127.0.0.1")


_v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_addr = st.one_of(_v4, _v6, st.none(), st.sampled_from(["127.0.0.1", "::1", "", "x"]))


@given(_addr, _addr, st.sampled_from(["smtp", "imap", ""]))
def test_a_proxy_address_is_never_judged(rip: str | None, real: str | None, svc: str) -> None:
    """Whatever the frontend sends, the address judged is never a trusted proxy's, a
    forwarded address counts only from a trusted proxy, and a proxy is named only
    when the connecting address is one."""
    from saslnetauth.policy.rules.addresses import parse_address

    r = PROXIES.route(rip, real, svc)
    assert not PROXIES.contains(parse_address(r.rip), svc)
    connecting = parse_address(real) if real else parse_address(rip)
    if r.proxy is not None:
        assert PROXIES.contains(connecting, svc)
        assert str(connecting) == r.proxy
    if r.case is Case.FORWARDED:
        assert r.rip == str(parse_address(rip))
    elif r.case is not Case.PROXY_ONLY and real:
        assert r.rip == real  # judged by the connecting address, never the forwarded one


def test_overlap_warning_names_the_proxy() -> None:
    _, nets, _ = parse_network("127.0.0.0/24")
    assert PROXIES.overlapping(nets) == ["127.0.0.0/8"]
    _, nets, _ = parse_network("any")
    assert sorted(PROXIES.overlapping(nets)) == [
        "127.0.0.0/8",
        "192.0.2.10/32 services=smtp",
        "::1/128",
    ]
    _, nets, _ = parse_network("203.0.113.0/24")
    assert PROXIES.overlapping(nets) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[proxies]\nnetworks = ["127.0.0.1/8"]', "127.0.0.1/8"),
        ('[proxies]\nnetworks = ["local"]', "not an address or network"),
        ('[proxies]\nnetworks = ["country:DE"]', "not an address or network"),
        ('[proxies]\nnetworks = ["127.0.0.1 imap"]', "only services="),
        ('[proxies]\nnetworks = ["127.0.0.1 services=i/m"]', "invalid service"),
        ('[proxies]\nnetworks = [""]', "a network such as"),
        ("[proxies]\nsession_seconds = -1", "proxies.session_seconds"),
        ("[proxies]\nsession_seconds = 1e9", "proxies.session_seconds"),
        ("[proxies]\nnetworks = 3", "expected a list"),
    ],
)
def test_bad_proxies_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


class _Memory:
    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, str], Binding] = {}

    def find(self, user_id: int, scope: int, proxy: str, now: float) -> Binding | None:
        b = self.rows.get((user_id, scope, proxy))
        return b if b is not None and b.expires > now else None

    def renew(self, b: Binding) -> None:
        self.rows[(b.user_id, b.scope, b.proxy)] = b

    def end(self, user_id: int, proxy: str) -> int:
        gone = [k for k in self.rows if k[0] == user_id and k[2] == proxy]
        for k in gone:
            del self.rows[k]
        return len(gone)


ALICE = UserRecord(7, "alice", "{ARGON2ID}$argon2id$v=19$...", True)
OK = Decision(Verdict.OK, Reason.OK, "alice", credentials_valid=True, matched="user network x")
FORWARDED = Route(Case.FORWARDED, "203.0.113.9", "127.0.0.1")
ONLY = Route(Case.PROXY_ONLY, None, "127.0.0.1")


def test_binder_opens_admits_and_ends() -> None:
    now = [1000.0]
    mem = _Memory()
    binder = SessionBinder(mem, 60, lambda: now[0])
    assert binder.settle(OK, FORWARDED, ALICE, None, None).proxy == "127.0.0.1"
    b = binder.lookup(ONLY, ALICE, None)
    assert b is not None and b.rip == "203.0.113.9" and b.expires == 1060.0
    d = binder.settle(OK, ONLY, ALICE, None, b)
    assert d.ok and d.matched == "webmail session from 203.0.113.9: user network x"
    # a changed password: the same session no longer admits, and is ended
    changed = UserRecord(7, "alice", "{ARGON2ID}$argon2id$v=19$other", True)
    d = binder.settle(OK, ONLY, changed, None, b)
    assert d.reason is Reason.PROXY_WITHOUT_CLIENT_ADDRESS and not d.ok
    assert binder.lookup(ONLY, ALICE, None) is None
    # a refused forwarded login ends it at once
    binder.settle(OK, FORWARDED, ALICE, None, None)
    refused = Decision(Verdict.FAIL, Reason.NETWORK, "alice", credentials_valid=True)
    binder.settle(refused, FORWARDED, ALICE, None, None)
    assert binder.lookup(ONLY, ALICE, None) is None
    # the window
    binder.settle(OK, FORWARDED, ALICE, None, None)
    now[0] = 1061.0
    assert binder.lookup(ONLY, ALICE, None) is None


def test_without_a_session_the_proxy_admits_nothing() -> None:
    for d in (OK, Decision(Verdict.FAIL, Reason.NO_NETWORK_RULES, "alice", True)):
        out = settle_unbound(d, ONLY)
        assert out.verdict is Verdict.FAIL
        assert out.reason is Reason.PROXY_WITHOUT_CLIENT_ADDRESS
        assert out.matched is None and out.proxy == "127.0.0.1"
    wrong = Decision(Verdict.FAIL, Reason.BAD_PASSWORD, "alice")
    assert settle_unbound(wrong, ONLY).reason is Reason.BAD_PASSWORD


def test_fingerprint_is_short_and_never_the_hash() -> None:
    fp = fingerprint(ALICE, None)
    assert len(fp) == 16 and ALICE.password_hash is not None and fp not in ALICE.password_hash
    assert fingerprint(UserRecord(8, "pam", None, True, backend="pam"), None) != fp
