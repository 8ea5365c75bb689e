"""A stale phone behind an office NAT is not an attack (issue 25, item 1), through a real
Postfix, judged by the real fail2ban-regex with the shipped filter and jail.

One address (the office's NAT) carries a phone that retries alice's old password
50 times and bob, who logs in beside it: no ban (the shipped filter over the
server's log matches fewer lines than the jail's maxretry) and no brake (the
client's penalty never passes one failure, so bob never waits). The same address
with 50 distinct wrong passwords: banned and braked, as before.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.test_fail2ban import JAIL, matches
from tests.support import ALLOWED_IP, PostfixInstance, peer_tmpdir, require_source_addresses
from tests.support.clitools import run
from tests.support.metrics import plain, samples
from tests.support.peers import require_binary
from tests.support.serverproc import ServerProcess, free_port, run_server

pytestmark = pytest.mark.peer

OFFICE = ALLOWED_IP
ALICE_PW = "alice new pw"
BOB_PW = "bob pw 1"
ATTEMPTS = 50


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    require_source_addresses(OFFICE)
    with peer_tmpdir("sna-f2r-") as d:
        yield d


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(peer_dir: Path, metrics_port: int) -> Iterator[ServerProcess]:
    db = f"sqlite:///{peer_dir}/f2r.db"
    assert run("init", db=db).code == 0
    for user, pw in (("alice", ALICE_PW), ("bob", BOB_PW)):
        r = run("user", "add", user, "--password-stdin", "--net", OFFICE, db=db, stdin=pw)
        assert r.code == 0, r.err
    cfg = peer_dir / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\nallowed_users = ["root", "postfix"]\n'
        f'metrics_listen = "inet:127.0.0.1:{metrics_port}"\n'
        "penalty_base = 0.01\npenalty_max = 0.04\npenalty_free_failures = 2\n"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg, workdir=peer_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, server: ServerProcess) -> Iterator[PostfixInstance]:
    with PostfixInstance(peer_dir / "postfix", server.unix) as pf:
        yield pf


def client_failures(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())[plain("saslnetauth_client_most_failures")]


def maxretry() -> int:
    found = re.search(r"^maxretry\s*=\s*(\d+)", JAIL.read_text(), re.M)
    assert found is not None
    return int(found.group(1))


def test_a_stale_phone_is_neither_banned_nor_braked(
    postfix: PostfixInstance, server: ServerProcess, metrics_port: int, tmp_path: Path
) -> None:
    require_binary("fail2ban-regex")
    start = len(server.log())
    for i in range(ATTEMPTS):
        assert postfix.login(OFFICE, "alice", "alice old pw")[0] == 535
        if i % 10 == 9:
            # the brake bob would wait: at most one failure counted (free_failures = 2;
            # his success clears it, and the phone's repeats after it count nothing)
            assert client_failures(metrics_port) == (1 if i == 9 else 0)
            assert postfix.login(OFFICE, "bob", BOB_PW)[0] == 235
    log_text = server.log()[start:]
    assert log_text.count("user=alice") == ATTEMPTS
    assert log_text.count("repeat=yes") == ATTEMPTS - 1
    assert log_text.count("user=bob") == ATTEMPTS // 10
    found = matches(log_text, tmp_path)
    assert found.count(OFFICE) == 1 < maxretry()


def test_distinct_wrong_passwords_are_banned_and_braked(
    postfix: PostfixInstance, server: ServerProcess, metrics_port: int, tmp_path: Path
) -> None:
    require_binary("fail2ban-regex")
    assert postfix.login(OFFICE, "bob", BOB_PW)[0] == 235  # a clean start for the address
    start = len(server.log())
    for i in range(ATTEMPTS):
        assert postfix.login(OFFICE, "alice", f"guess {i}")[0] == 535
    assert client_failures(metrics_port) == ATTEMPTS  # braked: the delay is at its cap
    log_text = server.log()[start:]
    assert "repeat=yes" not in log_text
    assert matches(log_text, tmp_path).count(OFFICE) == ATTEMPTS >= maxretry()
