"""Prometheus metrics endpoint of `saslnetauth serve`."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from saslnetauth.serve.metrics import MAX_SERIES, Metrics
from tests.support.clitools import run
from tests.support.metrics import auth, plain, samples
from tests.support.serverproc import free_port, run_server


def test_render_and_bounded_series() -> None:
    m = Metrics()
    m.observe("ok", "ok", "smtp", 0.003)
    m.observe("fail", "network", 'we"ird', 0.2)
    text = m.render()
    got = samples(text)
    assert got[auth("ok", "ok", "smtp")] == 1
    assert got[auth("fail", "network", 'we"ird')] == 1
    assert 'service="we\\"ird"' in text  # escaped on the wire
    assert got[plain("saslnetauth_verify_seconds_bucket", le="0.005")] == 1
    assert got[plain("saslnetauth_verify_seconds_bucket", le="+Inf")] == 2
    m.count_policy("allow", "-1")
    m.count("fail", "network", "imap")  # a policy report: counted, not timed
    got = samples(m.render())
    assert got[plain("saslnetauth_policy_requests_total", command="allow", status="-1")] == 1
    assert got[auth("fail", "network", "imap")] == 1
    assert got[plain("saslnetauth_verify_seconds_count")] == 2
    for i in range(MAX_SERIES * 2):
        m.observe("fail", "network", f"svc{i}", 0.001)
    assert len(m.auth) <= MAX_SERIES + 1


def test_metrics_endpoint(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/m.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}pw", "--net", "127.0.0.2", db=db).code == 0
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[serve]\nmetrics_listen = "inet:127.0.0.1:{port}"\npenalty_max = 0\n')
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", "pw", rip="127.0.0.2")
        c.plain(2, "alice", "pw", rip="127.0.0.3")
        c.plain(3, "alice", "no", rip="127.0.0.2")
        for _ in range(3):
            c.line()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = resp.read().decode()
    got = samples(body)
    assert got[auth("ok", "ok", "smtp")] == 1
    assert got[auth("fail", "network", "smtp")] == 1
    assert got[auth("fail", "bad_password", "smtp")] == 1
    assert got[plain("saslnetauth_verify_seconds_count")] == 3
    assert got[plain("saslnetauth_stolen_credentials_total")] == 1
    assert "# TYPE saslnetauth_stolen_credentials_total counter" in body
    assert got[plain("saslnetauth_connections_open")] == 1
    assert "pw" not in body.replace("saslnetauth", "")


def test_alert_and_worker_counters_are_exposed(tmp_path: Path) -> None:
    """Issue 14 item 4: the counters kept for alerts (fired, dropped) and for decision
    workers that died are metrics, and survive a reload."""
    db = f"sqlite:///{tmp_path}/m.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}pw", "--net", "127.0.0.2", db=db).code == 0
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[serve]\nmetrics_listen = "inet:127.0.0.1:{port}"\npenalty_max = 0\n'
        f'workers = 1\nalert_command = ["{slow}"]\nalert_timeout = 9\n'
    )

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return samples(resp.read().decode())

    with run_server(db, config=cfg, failure_delay=0.1) as srv:
        c = srv.connect()
        c.handshake()
        for i in range(1, 6):  # right password, forbidden network: an alert each
            c.plain(i, "alice", "pw", rip="192.0.2.7")  # one at a time: each is verified
            assert c.line().startswith("FAIL\t")
        got = scrape()
        assert got[plain("saslnetauth_alerts_fired_total")] == 4  # at most 4 at once
        assert got[plain("saslnetauth_alerts_dropped_total")] == 1
        assert got[plain("saslnetauth_worker_deaths_total")] == 0
        pid = int(srv.wait_log("worker started: pid=").split("worker started: pid=")[1].split()[0])
        os.kill(pid, signal.SIGKILL)
        srv.wait_log("worker started: pid=", timeout=30)
        deadline = time.monotonic() + 30
        while scrape()[plain("saslnetauth_worker_deaths_total")] != 1:
            assert time.monotonic() < deadline, "worker death not counted"
            time.sleep(0.2)
        srv.signal(signal.SIGHUP)
        srv.wait_log("configuration reloaded")
        got = scrape()
        assert got[plain("saslnetauth_alerts_fired_total")] == 4
        assert got[plain("saslnetauth_alerts_dropped_total")] == 1


TOKEN = "metrics-token-5e1c0a9f27b3"


def _scrape(port: int, authorization: str | None) -> int:
    headers = {"Authorization": authorization} if authorization is not None else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback http
            assert b"saslnetauth_auth_total" in resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        assert b"saslnetauth" not in exc.read()
        return int(exc.code)


def test_metrics_token(tmp_path: Path) -> None:
    """With [serve] metrics_token only scrapes that send it read the counters (every
    local user can reach a loopback port), and serve refuses a token others can read."""
    db = f"sqlite:///{tmp_path}/m.db"
    assert run("init", db=db).code == 0
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[serve]\nmetrics_listen = "inet:127.0.0.1:{port}"\nmetrics_token = "{TOKEN}"\n'
    )
    cfg.chmod(0o644)
    res = run(
        "--config",
        str(cfg),
        "serve",
        "--listen",
        f"unix:{tmp_path}/s",
        db=db,
        timeout=30,
        process=True,
    )
    assert res.code != 0 and "serve.metrics_token" in res.err and "chmod o-r" in res.err
    cfg.chmod(0o600)
    with run_server(db, config=cfg) as srv:
        srv.wait_log("metrics listening")
        for given in (None, TOKEN, f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer"):
            assert _scrape(port, given) == 401, given
        assert _scrape(port, f"Bearer {TOKEN}") == 200


@pytest.mark.parametrize("token", ["short", "has a space in it 0123456789"])
def test_metrics_token_checked(tmp_path: Path, token: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[serve]\nmetrics_token = "{token}"\n')
    res = run("--config", str(cfg), "user", "list", db=f"sqlite:///{tmp_path}/m.db")
    assert res.code != 0 and "serve.metrics_token" in res.err
