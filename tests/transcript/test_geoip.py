"""Country terms through the real `saslnetauth serve` (2 worker processes, the
classifier, the policy endpoint and /metrics): a login allowed by country:DE and
one refused by it, the failure's country in the log line and in `report`, and a
database replaced while the server runs (renamed into place, as geoipupdate does)
in force in every process without a restart."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.support.clitools import init_with_user, run
from tests.support.geoipdb import replace_atomically, write_asns, write_countries
from tests.support.metrics import plain, samples
from tests.support.policy import POLICY_KEYS, POLICY_SECRET
from tests.support.serverproc import ServerProcess, free_port, run_server

PW = "s3cret pw"
LOADED = "geoip database loaded: database=country"


def _config(tmp_path: Path, country: Path, asn: Path, metrics: int, policy: int) -> Path:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        f"""
[passwords]
argon2_memory_kib = 1024
argon2_time_cost = 1
[serve]
workers = 2
penalty_max = 0
metrics_listen = "inet:127.0.0.1:{metrics}"
[policy]
listen = "inet:127.0.0.1:{policy}"
{POLICY_KEYS}[geoip]
country_db = "{country}"
asn_db = "{asn}"
check_seconds = 0.2
"""
    )
    cfg.chmod(0o600)  # it holds the policy endpoint's secret
    return cfg


def _login(srv: ServerProcess, rip: str, service: str = "smtp") -> str:
    c = srv.connect()
    try:
        c.handshake()
        return c.login_plain("alice", PW, rip=rip, service=service).split("\t")[0]
    finally:
        c.close()


def _policy(port: int, remote: str) -> int:
    body = json.dumps({"login": "alice", "remote": remote, "protocol": "imap"}).encode()
    url = f"http://127.0.0.1:{port}/?command=allow"
    req = urllib.request.Request(url, data=body, headers={"X-API-Key": POLICY_SECRET})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback http
        return int(json.loads(resp.read())["status"])


def _wait_count(srv: ServerProcess, needle: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while srv.log().count(needle) < count:
        assert time.monotonic() < deadline, f"{count}x {needle!r} not logged:\n{srv.log()}"
        assert srv.proc.poll() is None, srv.log()
        time.sleep(0.05)


def test_country_term_through_the_server(sqlite_url: str, tmp_path: Path) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "country:de", "192.0.2.50")
    country = write_countries(
        tmp_path / "country.mmdb",
        {"192.0.2.0/25": "DE", "192.0.2.128/25": "FR", "2001:db8:1::/48": "DE"},
    )
    asn = write_asns(tmp_path / "asn.mmdb", {"192.0.2.0/24": 3320})
    metrics, policy = free_port(), free_port()
    cfg = _config(tmp_path, country, asn, metrics, policy)
    with run_server(db, config=cfg) as srv:
        loaded = srv.log().count(LOADED)
        assert loaded >= 4  # each worker, the classifier and the server process
        assert _login(srv, "192.0.2.9") == "OK"
        assert _login(srv, "::ffff:192.0.2.9") == "OK"
        assert _login(srv, "2001:db8:1::7") == "OK"
        assert _login(srv, "192.0.2.200") == "FAIL"
        assert _login(srv, "198.51.100.1") == "FAIL"  # not in the database: fail closed
        assert _login(srv, "192.0.2.50") == "OK"  # a network still admits without a lookup
        assert _policy(policy, "192.0.2.9") == 0
        assert _policy(policy, "192.0.2.200") == -1
        srv.wait_log(
            "auth fail: user=alice service=smtp rip=192.0.2.200 reason=network "
            "credentials_valid=yes country=FR asn=3320"
        )
        assert 'rule="user network country:DE (all services)"' in srv.log()

        # an updater renames a new file into place: every process takes it, no restart
        new = write_countries(tmp_path / "new.mmdb", {"192.0.2.0/24": "FR"})
        replace_atomically(country, new)
        _wait_count(srv, LOADED, 2 * loaded)
        assert _login(srv, "192.0.2.9") == "FAIL"
        assert _policy(policy, "192.0.2.9") == -1
        # the database goes away: fail closed, logged, visible in the metrics
        country.unlink()
        _wait_count(srv, "geoip database unavailable: database=country", loaded)
        assert _login(srv, "192.0.2.9") == "FAIL"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            got = samples(r.read().decode())
        assert got[plain("saslnetauth_geoip_database_loaded", database="country")] == 0
        assert got[plain("saslnetauth_geoip_database_loaded", database="asn")] == 1
        assert got[plain("saslnetauth_failures_located_total", result="found")] >= 2
        assert got[plain("saslnetauth_failures_located_total", result="unknown")] >= 1
        assert got[plain("saslnetauth_failures_located_total", result="unavailable")] >= 1
        assert "Traceback" not in srv.log()

    # the verdict record: failures by country and by ASN
    deadline = time.monotonic() + 20
    while True:
        r = run("report", "--json", db=db)
        assert r.code == 0, r.err
        rep = json.loads(r.out)
        if rep["failures_by_country"]:
            break
        assert time.monotonic() < deadline, r.out
        time.sleep(0.2)
    assert {"country": "FR", "failures": 2} in rep["failures_by_country"]
    assert rep["failures_by_asn"][0]["asn"] == 3320
    text = run("report", db=db).out
    assert "failures by country:\n  FR" in text
    assert "failures by ASN:\n  AS3320" in text
