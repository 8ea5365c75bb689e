"""Prometheus metrics endpoint of `saslnetauth serve`."""

from __future__ import annotations

import urllib.request
from pathlib import Path

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
