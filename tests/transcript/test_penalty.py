"""Brute-force brakes: the pure penalty box, and the server applying it and alerting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from saslnetauth.policy.rules.addresses import parse_address
from saslnetauth.serve.decide.penalty import PenaltyBox, client_bucket, client_key
from tests.support.clitools import init_with_user
from tests.support.serverproc import run_server

PW = "p3nalty pw"


def test_client_keys_group_ipv6_by_prefix() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7/32"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7/32"
    assert (
        client_key("2001:db8:1:2:aaaa::1")
        == client_key("2001:db8:1:2:bbbb::9")
        == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("2001:db8:1:2::1", ipv6_prefix=48) == "2001:db8:1::/48"
    assert client_key(None) is None and client_key("junk") is None


ADDRESSES = [
    "192.0.2.7",
    "192.0.2.8",
    "::ffff:192.0.2.7",
    "2001:db8:1:2:aaaa::1",
    "2001:db8:1:2:bbbb::9",
    "2001:db8:1:3::1",
    "2001:db8:1::1",
    "fe80::1%eth0",
    "fe80::2",
    "0.0.0.7",
    "::7",
]


@pytest.mark.parametrize("v6", [64, 48, 128])
@pytest.mark.parametrize("v4", [32, 24])
def test_client_bucket_groups_exactly_like_client_key(v4: int, v6: int) -> None:
    """The server's cheap tuple buckets put the same clients together as the text keys."""
    for a in ADDRESSES:
        for b in ADDRESSES:
            same_key = client_key(a, v4, v6) == client_key(b, v4, v6)
            bucket_a = client_bucket(parse_address(a), v4, v6)
            assert (bucket_a == client_bucket(parse_address(b), v4, v6)) is same_key, (a, b)
    assert client_bucket(parse_address("0.0.0.7")) != client_bucket(parse_address("::7"))
    assert client_bucket(None) is None and client_bucket(parse_address("junk")) is None


def test_exponential_growth_cap_and_success_clears() -> None:
    box = PenaltyBox(base=0.5, cap=4.0, free_failures=2)
    key = "192.0.2.7/32"
    delays = []
    for i in range(8):
        delays.append(box.delay(key, now=i))
        box.record_failure(key, now=i)
    assert delays == [0, 0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert box.delay("other", now=10) == 0
    box.record_success(key)
    assert box.delay(key, now=11) == 0


def test_expiry_and_lru_bound() -> None:
    box = PenaltyBox(base=1, cap=8, free_failures=0, expire=100, max_entries=3)
    for k in "abcd":
        box.record_failure(k, now=0)
    assert len(box) == 3 and box.failures("a", now=1) == 0  # evicted, oldest first
    assert box.failures("d", now=1) == 1
    assert box.delay("d", now=150) == 0  # expired
    for i in range(10_000):
        box.record_failure(f"k{i}", now=200)
    assert len(box) == 3


def test_no_address_is_never_penalised() -> None:
    box = PenaltyBox(free_failures=0)
    box.record_failure(None, now=0)
    assert box.delay(None, now=0) == 0 and len(box) == 0


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = init_with_user(f"sqlite:///{tmp_path}/p.db", "alice", PW, "127.0.0.2")
    return url


def test_server_penalty_slows_a_guessing_client_only(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        "[serve]\npenalty_base = 0.4\npenalty_max = 0.8\npenalty_free_failures = 1\n"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(3):
            c.plain(i + 1, "alice", f"guess{i}", rip="198.51.100.9")
            c.line()
        t0 = time.monotonic()
        c.plain(10, "alice", "guess", rip="198.51.100.9")  # penalised: waits >= 0.8 s
        c.line()
        slow = time.monotonic() - t0
        c.plain(11, "alice", PW, rip="127.0.0.2")  # another client: not penalised
        assert c.line() == "OK\t11\tuser=alice"
        assert slow >= 0.8
        # a success from the penalised client clears its penalty (it would need to be
        # allowed there; here 127.0.0.2 fails twice, then succeeds)
        for i in range(2):
            c.plain(20 + i, "alice", "bad", rip="127.0.0.2")
            c.line()
        c.plain(30, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t30\tuser=alice"
        t0 = time.monotonic()
        c.plain(31, "alice", "bad", rip="127.0.0.2")
        c.line()
        c.plain(32, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t32\tuser=alice"


def test_user_penalty_never_touches_the_allowed_network(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "u.toml"
    cfg.write_text(
        "[serve]\npenalty_max = 1\nuser_penalty = true\n[passwords]\n"
        "argon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(8):  # an attacker hammers alice from outside her networks
            c.plain(i + 1, "alice", f"guess{i}", rip=f"203.0.113.{i + 1}")
            c.line()
        # an attacker's next try (braked, >= 0.5 s) and then the real alice at once:
        # alice's OK overtakes it, so the user brake did not touch her network
        t0 = time.monotonic()
        c.plain(51, "alice", "guess", rip="203.0.113.77")
        c.plain(50, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t50\tuser=alice"
        assert c.line().startswith("FAIL\t51\t")
        assert time.monotonic() - t0 >= 0.5


def test_stolen_credentials_alert(db: str, tmp_path: Path) -> None:
    out = tmp_path / "alert.out"
    script = tmp_path / "alert.sh"
    script.write_text(
        f'#!/bin/sh\n{{ cat; echo "env=$SASLNETAUTH_USER,$SASLNETAUTH_RIP,'
        f'$SASLNETAUTH_SERVICE,$SASLNETAUTH_REASON"; }} >> {out}\n'
    )
    script.chmod(0o755)
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'[serve]\nalert_command = ["{script}"]\n[passwords]\n'
        "argon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", PW, rip="203.0.113.50", service="submission")
        assert c.line().startswith("FAIL\t1\t")
        c.plain(2, "alice", "wrong", rip="203.0.113.51")  # wrong password: no alert
        c.line()
        c.plain(3, "alice", PW, rip="127.0.0.2")  # allowed: no alert
        c.line()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (out.exists() and "env=" in out.read_text()):
            time.sleep(0.05)
        text = out.read_text()
        assert text.splitlines() == [
            "stolen credentials: user=alice rip=203.0.113.50 service=submission reason=network",
            "env=alice,203.0.113.50,submission,network",
        ]
        assert PW not in text
        log = srv.log()
        assert "reason=network credentials_valid=yes" in log
    # a hanging alert command is killed and never holds up logins
    cfg.write_text(
        f'[serve]\nalert_command = ["{slow}"]\nalert_timeout = 0.5\n[passwords]\n'
        "argon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", PW, rip="203.0.113.50")
        c.line()
        c.plain(2, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t2\tuser=alice"
        srv.wait_log("alert command killed")
        assert srv.stop() == 0
        assert "stolen_credentials=1" in srv.log()


def test_alerts_survive_bad_addresses_and_get_a_minimal_environment(
    db: str, tmp_path: Path
) -> None:
    """Issue 11 item 12: a NUL in the (escaped) rip once made starting the alert
    command raise ValueError and kept its slot forever; after four such logins every
    later alert was dropped. The command also inherited the server's environment."""
    out = tmp_path / "alert.env"
    script = tmp_path / "alert.sh"
    # /proc/$$/environ is the environment exactly as the command was started with
    script.write_text(f"#!/bin/sh\n{{ tr '\\000' '\\n' < /proc/$$/environ; echo --; }} >> {out}\n")
    script.chmod(0o755)
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'[serve]\nalert_command = ["{script}"]\n[passwords]\n'
        "argon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    secret_url = "postgresql://saslnetauth:DbPassw0rd@db.example/saslnetauth"
    env = {"SASLNETAUTH_DATABASE_URL": secret_url, "SOME_SECRET": "leak-me", "LANG": "C.UTF-8"}

    def alerts() -> list[dict[str, str]]:
        if not out.exists():
            return []
        blocks = out.read_text().split("--\n")[:-1]
        return [dict(ln.split("=", 1) for ln in b.splitlines() if "=" in ln) for b in blocks]

    def wait_alerts(count: int) -> None:
        deadline = time.monotonic() + 3
        while len(alerts()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    with run_server(db, config=cfg, env=env) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(1, 7):  # rip with an escaped NUL (\x01 0): more than max_running
            c.plain(i, "alice", PW, rip="203.0.113.5\x010")
            assert c.line().startswith(f"FAIL\t{i}\t")
            wait_alerts(i)
        c.plain(10, "alice", PW, rip="::ffff:203.0.113.50", service="submission")
        assert c.line().startswith("FAIL\t10\t")
        wait_alerts(7)
        got = alerts()
        log = srv.log()
    assert "alert dropped" not in log
    assert len(got) == 7, (got, log)
    assert {a["SASLNETAUTH_RIP"] for a in got[:6]} == {"203.0.113.5?"}
    last = got[6]
    assert last["SASLNETAUTH_RIP"] == "203.0.113.50"  # canonical, not ::ffff:...
    assert (last["SASLNETAUTH_USER"], last["SASLNETAUTH_SERVICE"]) == ("alice", "submission")
    for a in got:
        assert set(a) <= {
            "PATH",
            "LANG",
            "SASLNETAUTH_EVENT",
            "SASLNETAUTH_USER",
            "SASLNETAUTH_RIP",
            "SASLNETAUTH_SERVICE",
            "SASLNETAUTH_REASON",
            "SASLNETAUTH_CREDENTIAL",  # an app password's label; empty: the main password
        }, a
        assert a["SASLNETAUTH_CREDENTIAL"] == ""
        assert a["SASLNETAUTH_EVENT"] == "stolen_credentials"
    assert "DbPassw0rd" not in out.read_text() and "leak-me" not in out.read_text()
    assert last["LANG"] == "C.UTF-8" and last["PATH"]
