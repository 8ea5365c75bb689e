"""New-location alerts through the real `saslnetauth serve` (two worker processes, a
real .mmdb country database): the first login from a new /24 and from a new country
logs new_location=... and runs alert_command with SASLNETAUTH_EVENT=new_location; the
second login from there does not, nor does a new user's first login; an app password
is compared with its user's memory on first use and has its own afterwards."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from tests.support.clitools import init_with_user, run
from tests.support.geoipdb import write_countries
from tests.support.metrics import plain, samples
from tests.support.serverproc import ServerProcess, free_port, run_server

PW = "n3w place pw"
OK = "OK\t"


def _login(srv: ServerProcess, user: str, rip: str, password: str = PW) -> None:
    c = srv.connect()
    try:
        c.handshake()
        line = c.login_plain(user, password, rip=rip, service="imap")
        assert line.startswith(OK), (user, rip, line)
    finally:
        c.close()


def _remembered(db: str, user: str, *values: str, timeout: float = 10) -> None:
    """Wait until the server wrote these places of ``user`` (another worker process
    reads them from the database)."""
    query = sa.text(
        "SELECT value FROM user_locations JOIN users ON users.id = user_locations.user_id "
        "WHERE users.name = :u"
    )
    engine = sa.create_engine(db)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                have = {row[0] for row in conn.execute(query, {"u": user})}
            if set(values) <= have:
                return
            assert time.monotonic() < deadline, (values, have)
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_new_location_alerts(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/loc.db", "alice", PW, "any")
    assert run("user", "add", "bob", "--password-stdin", "--net", "any", db=db, stdin=PW).code == 0
    r = run(
        "user", "app-password", "add", "alice", "--label", "phone", "--net", "any", "--json", db=db
    )
    phone = str(json.loads(r.out)["password"])
    country = write_countries(
        tmp_path / "country.mmdb",
        {"192.0.2.0/24": "DE", "203.0.113.0/24": "DE", "198.51.100.0/24": "NL"},
    )
    out = tmp_path / "alerts.out"
    script = tmp_path / "alert.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$SASLNETAUTH_EVENT user=$SASLNETAUTH_USER rip=$SASLNETAUTH_RIP '
        "new=$SASLNETAUTH_NEW_LOCATION country=$SASLNETAUTH_COUNTRY "
        f'credential=$SASLNETAUTH_CREDENTIAL" >> {out}\n'
    )
    script.chmod(0o755)
    cfg = tmp_path / "c.toml"
    port = free_port()
    cfg.write_text(
        f'[serve]\nworkers = 2\npenalty_max = 0\nalert_command = ["{script}"]\n'
        f'metrics_listen = "inet:127.0.0.1:{port}"\n'
        f'[geoip]\ncountry_db = "{country}"\n'
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        _login(srv, "alice", "192.0.2.10")  # her first login: seeds the memory
        _remembered(db, "alice", "192.0.2.0/24", "DE")
        _login(srv, "alice", "192.0.2.20")
        _login(srv, "alice", "203.0.113.5")  # a new /24 in a known country
        _login(srv, "alice", "198.51.100.7")  # a new /24 and a new country
        _remembered(db, "alice", "203.0.113.0/24", "198.51.100.0/24", "NL")
        _login(srv, "alice", "198.51.100.8")  # the second time: known
        _login(srv, "alice", "::ffff:203.0.113.77")  # known too (IPv4-mapped)
        _login(srv, "bob", "198.51.100.7")  # a new user's first login: silent
        _login(srv, "alice", "203.0.113.9", phone)  # first use: its user knows the place
        _login(srv, "alice", "2001:db8:5::1", phone)  # a new /48 for the phone
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert samples(resp.read().decode())[plain("saslnetauth_new_locations_total")] == 3
        assert srv.stop() == 0  # waits for the alert commands
        log = srv.log()
    alerts = sorted(out.read_text().splitlines())  # the commands run side by side
    assert alerts == sorted(
        [
            "new_location user=alice rip=203.0.113.5 new=network country=DE credential=",
            "new_location user=alice rip=198.51.100.7 new=network,country country=NL credential=",
            "new_location user=alice rip=2001:db8:5::1 new=network country= credential=phone",
        ]
    )
    lines = [ln for ln in log.splitlines() if "auth ok:" in ln]
    marked = [ln for ln in lines if "new_location=" in ln]
    assert len(lines) == 9 and len(marked) == 3, log
    assert re.search(r"rip=198\.51\.100\.7 rule=.* new_location=network,country country=NL", log)
    assert "new_location=3" in log  # the count in the stop line
    assert PW not in log and phone not in log
