"""Network-aware scheduling in the real server (issue 13): replies, logs and metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.support.clitools import run
from tests.support.serverproc import AuthClient, free_port, run_server

PW = "fl00d pw"
HOME = "127.0.0.2"  # alice's network
SECOND = "127.0.0.4"  # alice's other network
OUTSIDE = "127.0.0.3"


def setup_db(tmp_path: Path, scheme_hash: str | None = None) -> str:
    db = f"sqlite:///{tmp_path}/f.db"
    assert run("init", db=db).code == 0
    args = ["user", "add", "alice", "--net", HOME, "--net", SECOND]
    if scheme_hash is None:
        assert run(*args, "--password-stdin", db=db, stdin=PW + "\n").code == 0
    else:
        assert run(*args, "--hash", scheme_hash, db=db).code == 0
    return db


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def value(body: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def replies(c: AuthClient, n: int) -> dict[int, str]:
    out = {}
    for _ in range(n):
        line = c.line()
        out[int(line.split("\t")[1])] = line
    return out


def test_refused_unverified_look_like_every_failure(tmp_path: Path) -> None:
    """From outside, an existing name (right or wrong password) and an unknown one get
    the same reply by the same path: refused without a hash, counted, logged truly."""
    db = setup_db(tmp_path, "{PLAIN}" + PW)
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[serve]\nhopeless_share = 0.0\npenalty_max = 0\nmetrics_listen = "inet:127.0.0.1:{port}"\n'
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", PW, rip=OUTSIDE)
        c.plain(2, "alice", "wrong", rip=OUTSIDE)
        c.plain(3, "ghost", PW, rip=OUTSIDE)
        c.plain(4, "alice", "wrong", rip=HOME)  # could succeed: verified
        got = replies(c, 4)
        body = metrics(port)
        assert srv.stop() == 0
        log = srv.log()
    shapes = {
        i: re.sub(r"\tuser=\S+", "\tuser=U", got[i].replace(f"\t{i}\t", "\tN\t")) for i in got
    }
    assert (
        shapes[1]
        == shapes[2]
        == shapes[3]
        == shapes[4]
        == "FAIL\tN\tuser=U\treason=Authentication failed"
    )
    assert got[3] == "FAIL\t3\tuser=ghost\treason=Authentication failed"
    assert value(body, "saslnetauth_hopeless_total") == 3
    assert value(body, "saslnetauth_hopeless_unverified_total") == 3
    assert value(body, "saslnetauth_hopeless_verified_total") == 0
    assert value(body, "saslnetauth_stolen_credentials_total") == 0  # nothing was verified
    unverified = [line for line in log.splitlines() if "verified=no" in line]
    assert len(unverified) == 3
    assert sum("user=alice" in x and "reason=network" in x for x in unverified) == 2
    assert sum("user=ghost" in x and "reason=unknown_user" in x for x in unverified) == 1
    assert re.search(
        r"auth fail: user=alice service=smtp rip=127.0.0.2 reason=bad_password$", log, re.M
    )
    assert PW not in log
    # the refusals are in the verdict record too (written by the classifier's engine)
    r = run("report", "--json", "--since", "1h", db=db)
    assert r.code == 0, r.err
    reasons = json.loads(r.out)["failures_by_reason"]
    assert reasons == {"network": 2, "unknown_user": 1, "bad_password": 1}


def test_stolen_password_signal_with_spare_capacity(tmp_path: Path) -> None:
    db = setup_db(tmp_path, "{PLAIN}" + PW)
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[serve]\npenalty_max = 0\nmetrics_listen = "inet:127.0.0.1:{port}"\n')
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert (
            c.login_plain("alice", PW, rip=OUTSIDE)
            == "FAIL\t1\tuser=alice\treason=Authentication failed"
        )
        body = metrics(port)
        assert srv.stop() == 0
        log = srv.log()
    # nothing was waiting: verified straight away, without being classified
    assert value(body, "saslnetauth_unclassified_total") == 1
    assert value(body, "saslnetauth_hopeless_unverified_total") == 0
    assert value(body, "saslnetauth_stolen_credentials_total") == 1
    assert "reason=network credentials_valid=yes" in log


def test_could_succeed_login_overtakes_queued_hopeless_ones(tmp_path: Path) -> None:
    """One worker busy with slow (default ARGON2ID) hashes of guesses from outside: a
    login from alice's network, sent last, is verified before the guesses that were
    waiting (in arrival order it would be verified last). Every FAIL leaves at its
    fixed deadline from arrival, so the order of the verifications is read from the
    log (one line per decision, written as it is made), not from the replies."""
    db = setup_db(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nworkers = 1\npenalty_max = 0\n")
    with run_server(db, config=cfg, failure_delay=3.0) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(1, 7):
            c.plain(i, "alice", f"guess{i}", rip=OUTSIDE)
        c.plain(7, "alice", PW, rip=HOME)  # could succeed, and does
        replies = [c.line() for _ in range(7)]
        assert srv.stop() == 0
        log = srv.log()
    assert replies[0] == "OK\t7\tuser=alice"  # an OK is not held to the failure deadline
    verified = [
        line
        for line in log.splitlines()
        if re.search(r"auth (ok|fail): user=alice ", line) and "verified=no" not in line
    ]
    outcomes = ["ok" if "auth ok:" in line else "fail" for line in verified]
    assert "ok" in outcomes, log
    # behind at most the guesses the worker already held, never behind the rest
    assert outcomes.index("ok") <= 2, outcomes


def test_brake_for_an_attacker_inside_an_allowed_network(tmp_path: Path) -> None:
    """A compromised machine in alice's network could succeed, so it is verified first,
    but the per-address penalty still holds it back while alice logs in elsewhere."""
    db = setup_db(tmp_path, "{PLAIN}" + PW)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\npenalty_base = 1.0\npenalty_max = 4.0\npenalty_free_failures = 2\n")
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i in (1, 2):
            assert (
                c.login_plain("alice", f"guess{i}", rip=HOME)
                == f"FAIL\t{i}\tuser=alice\treason=Authentication failed"
            )
        c.plain(3, "alice", "guess3", rip=HOME)  # braked: waits before it is verified
        c.plain(4, "alice", PW, rip=SECOND)
        first, second = c.line(), c.line()
        assert srv.stop() == 0
    assert first == "OK\t4\tuser=alice"
    assert second == "FAIL\t3\tuser=alice\treason=Authentication failed"
