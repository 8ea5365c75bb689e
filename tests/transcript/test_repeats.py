"""A repeated wrong password (a stale device) does not grow the brakes: the pure memory,
and the server logging ``repeat=yes`` and keeping the brakes to distinct passwords."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from saslnetauth.serve.decide.repeats import REMEMBER, RepeatMemory
from tests.support.clitools import init_with_user
from tests.support.metrics import plain, samples
from tests.support.serverproc import free_port, run_server

PW = "r3peat pw"
CLIENT = (4, 0xC0000207)


def test_a_wrong_password_repeats_only_for_its_client_and_user() -> None:
    mem = RepeatMemory(max_entries=100, expire=100)
    first = mem.check(CLIENT, "alice", b"old", now=0)
    assert not first.client and not first.user
    mem.remember(CLIENT, "alice", first, now=0, for_user=True)
    again = mem.check(CLIENT, "alice", b"old", now=1)
    assert again.client and again.user
    assert not mem.check(CLIENT, "alice", b"other", now=1).client
    assert not mem.check(CLIENT, "bob", b"old", now=1).client  # another user: spraying counts
    elsewhere = mem.check((4, 9), "alice", b"old", now=1)
    assert not elsewhere.client and elsewhere.user  # the user's memory spans clients
    assert not mem.check(CLIENT, "alice", b"old", now=200).client  # expired


def test_the_memory_is_bounded_and_keeps_the_newest() -> None:
    mem = RepeatMemory(max_entries=3, expire=100)
    for i in range(REMEMBER + 1):
        mem.remember(CLIENT, "alice", mem.check(CLIENT, "alice", b"pw%d" % i, 0), 0, for_user=False)
    assert not mem.check(CLIENT, "alice", b"pw0", 1).client  # the oldest fell out
    assert all(mem.check(CLIENT, "alice", b"pw%d" % i, 1).client for i in range(1, REMEMBER + 1))
    assert not mem.check(CLIENT, "alice", b"pw1", 1).user  # for_user=False: not kept per user
    for i in range(1000):
        mem.remember((4, i), "alice", mem.check((4, i), "alice", b"x", 0), 0, for_user=True)
    assert len(mem) == 3


def test_digests_are_keyed_per_process() -> None:
    a, b = RepeatMemory(), RepeatMemory()
    assert a.digest(b"pw") == a.digest(b"pw") != b.digest(b"pw")
    assert b"pw" not in a.digest(b"pw")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


def test_server_repeats_do_not_grow_the_brakes(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/r.db", "alice", PW, "127.0.0.2")
    port = free_port()
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        f'[serve]\nmetrics_listen = "inet:127.0.0.1:{port}"\n'
        "penalty_base = 0.01\npenalty_max = 0.02\nuser_penalty = true\n"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        replies = []
        for i in range(1, 21):  # a stale phone outside alice's networks
            c.plain(i, "alice", "old pw", rip="198.51.100.9")
            replies.append(c.line())
        c.plain(30, "ghost", "old pw", rip="198.51.100.9")  # an unknown name: another pair
        replies.append(c.line())
        got = scrape(port)
        assert got[plain("saslnetauth_client_most_failures")] == 2
        assert got[plain("saslnetauth_user_most_failures")] == 1
        assert got[plain("saslnetauth_repeated_failures_total")] == 19
        # the same failures, one reply for all of them
        assert {r.split("\t", 2)[0] + "\t" + r.split("\t", 2)[2] for r in replies} == {
            "FAIL\tuser=alice\treason=Authentication failed",
            "FAIL\tuser=ghost\treason=Authentication failed",
        }
        for i in range(40, 45):  # distinct wrong passwords from other clients: each counts
            c.plain(i, "alice", f"guess {i}", rip=f"203.0.113.{i}")
            c.line()
        c.plain(50, "alice", "guess 40", rip="203.0.113.99")  # one seen for alice elsewhere
        c.line()
        got = scrape(port)
        assert got[plain("saslnetauth_user_most_failures")] == 6
        assert got[plain("saslnetauth_client_most_failures")] == 2
        c.plain(60, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t60\tuser=alice"
        log = srv.log()
    lines = [line for line in log.splitlines() if "auth fail:" in line]
    stale = [line for line in lines if "rip=198.51.100.9" in line and "user=alice" in line]
    assert len(stale) == 20
    assert "repeat=yes" not in stale[0]
    assert all(" repeat=yes " in line for line in stale[1:])
    assert sum("repeat=yes" in line for line in lines) == 19  # the user-wide repeat: not logged
    assert "old pw" not in log and PW not in log
