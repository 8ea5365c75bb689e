"""The shipped fail2ban filter, run by the real fail2ban-regex on a log made by the real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.peers import require_binary
from tests.support.policy import POLICY_KEYS, POLICY_SECRET, write_secret_config
from tests.support.serverproc import free_port, run_server

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
FILTER = ROOT / "dovecot-examples" / "fail2ban" / "filter.d" / "saslnetauth.conf"
JAIL = ROOT / "dovecot-examples" / "fail2ban" / "jail.d" / "saslnetauth.conf"
PW = "f2b pw"


def install_filter(tmp: Path) -> Path:
    """Place the shipped filter beside Debian's common.conf, as an admin installs it."""
    common = Path("/etc/fail2ban/filter.d/common.conf")
    if not common.is_file():
        from tests.support.peers import missing

        missing("fail2ban's /etc/fail2ban/filter.d/common.conf")
    d = tmp / "filter.d"
    d.mkdir()
    (d / "common.conf").write_text(common.read_text())
    target = d / "saslnetauth.conf"
    target.write_text(FILTER.read_text())
    return target


def matches(log_text: str, tmp: Path) -> list[str]:
    """The addresses the shipped filter finds in ``log_text`` (real fail2ban-regex)."""
    f2b = require_binary("fail2ban-regex")
    log = tmp / "saslnetauth.log"
    log.write_text(log_text)
    filt = install_filter(tmp)
    res = subprocess.run(
        [f2b, "-o", "ip", str(log), str(filt)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.split()


def test_filter_counts_exactly_the_failures(tmp_path: Path) -> None:
    f2b = require_binary("fail2ban-regex")
    db = init_with_user(f"sqlite:///{tmp_path}/f.db", "alice", PW, "127.0.0.2", "::1")
    assert (
        run(
            "user", "add", 'we ird"user', "--password-stdin", "--net", "any", db=db, stdin=PW + "\n"
        ).code
        == 0
    )
    assert run("user", "add", "broken", "--hash", "{PLAIN}x", "--net", "any", db=db).code == 0
    assert run("user", "add", "carol", "--hash", "{PLAIN}c", "--net", "any", db=db).code == 0
    assert run("user", "set", "carol", "--main-password-services", "imap", db=db).code == 0
    import sqlalchemy as sa

    eng = sa.create_engine(db)
    with eng.begin() as conn:  # an unusable hash -> TEMPFAIL, which must not count
        conn.execute(sa.text("UPDATE users SET password_hash='{NOPE}x' WHERE name='broken'"))
    eng.dispose()
    app = run(
        "user",
        "app-password",
        "add",
        "alice",
        "--label",
        "phone",
        "--net",
        "127.0.0.5",
        "--json",
        db=db,
    )
    phone = str(json.loads(app.out)["password"])
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[serve]\npenalty_max = 0\n[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    failures = [
        ("alice", "wrong", "192.0.2.10"),  # bad password
        ("alice", PW, "192.0.2.11"),  # network (stolen credentials)
        ("ghost", PW, "192.0.2.12"),  # unknown user
        ("alice", "wrong", "2001:db8::13"),  # IPv6
        ('we ird"user', "nope", "192.0.2.14"),  # a user name that needs quoting
        ("alice", phone.upper(), "192.0.2.18"),  # app password, network (credential=phone)
        ("alice", phone[:-1] + ("a" if phone[-1] != "a" else "b"), "192.0.2.19"),  # its secret
        ("carol", "c", "192.0.2.20"),  # main password on smtp: app_password_required
        # names that would hide a failure or name another address if a quoted value
        # could be read as several fields
        ("x repeat=yes y", "nope", "192.0.2.22"),
        ("x rip=192.0.2.99 y", "nope", "192.0.2.23"),
        ("alice", PW, "::ffff:192.0.2.15"),  # mapped address
    ]
    # the same wrong password again from the same client for the same user: a stale
    # device, logged repeat=yes and ignored by the filter
    repeats = [("alice", "wrong", "192.0.2.10"), ("alice", "wrong", "192.0.2.10")]
    successes = [
        ("alice", PW, "127.0.0.2"),
        ("alice", PW, "::1"),
        ('we ird"user', PW, "192.0.2.16"),
        ("alice", phone, "127.0.0.5"),
    ]
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i, (user, pw, rip) in enumerate(failures + repeats + successes, start=1):
            c.plain(i, user, pw, rip=rip)
            c.line()
        c.plain(99, "broken", "x", rip="192.0.2.17")
        assert "temp" in c.line()
        c.plain(100, "alice", "wrong", rip=None)  # no address: nothing to ban
        c.line()
        log_text = srv.log()
    assert log_text.count("credential=phone") == 3
    assert "rip=192.0.2.20 reason=app_password_required" in log_text
    log = tmp_path / "saslnetauth.log"
    log.write_text(log_text)
    assert log_text.count("auth fail:") == len(failures) + len(repeats) + 1
    assert log_text.count("rip=192.0.2.10 repeat=yes ") == len(repeats)
    installed = install_filter(tmp_path)
    res = subprocess.run(
        [f2b, "-o", "ip", str(log), str(installed)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    ips = res.stdout.split()
    expected = [rip for _, _, rip in failures]
    expected[-1] = "192.0.2.15"  # fail2ban reports the IPv4 of a mapped address
    assert sorted(ips) == sorted(expected), res.stdout
    summary = subprocess.run(
        [f2b, str(log), str(installed)], capture_output=True, text=True, timeout=120
    )
    assert f"Failregex: {len(failures)} total" in summary.stdout, summary.stdout


def test_filter_counts_policy_reports(tmp_path: Path) -> None:
    """The log lines of the policy endpoint (Dovecot's reports) feed the same filter."""
    import http.client
    import json

    require_binary("fail2ban-regex")  # skips before any server starts
    db = f"sqlite:///{tmp_path}/f.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}x", "--net", "127.0.0.2", db=db).code == 0
    port = free_port()
    cfg = write_secret_config(
        tmp_path / "c.toml", f'[policy]\nlisten = "inet:127.0.0.1:{port}"\n{POLICY_KEYS}'
    )
    reports = [  # (body fields, counts as a failure)
        (
            {
                "login": "alice",
                "remote": "192.0.2.20",
                "success": False,
                "fail_type": "credentials",
            },
            1,
        ),
        ({"login": "alice", "remote": "192.0.2.21", "success": False, "policy_reject": True}, 1),
        ({"login": "ghost", "remote": "2001:db8::22", "success": False}, 1),  # 2.3: no fail_type
        ({"login": "alice", "remote": "127.0.0.2", "success": True}, 0),
        # 2.4, no fail_type named: Dovecot's own temporary failure, not the client's fault
        ({"login": "alice", "remote": "192.0.2.23", "success": False, "fail_type": ""}, 0),
    ]
    with run_server(db, config=cfg) as srv:
        srv.wait_log("policy listening")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for fields, _ in reports:
            body = json.dumps({"protocol": "imap", **fields})
            c.request("POST", "/?command=report", body, {"X-API-Key": POLICY_SECRET})
            assert json.loads(c.getresponse().read()) == {"status": 0}
        c.close()
        srv.wait_log("rip=127.0.0.2 via=policy")
        log_text = srv.log()
    ips = matches(log_text, tmp_path)
    expected = [str(f["remote"]) for f, failure in reports if failure]
    assert sorted(ips) == sorted(expected), ips


def test_jail_names_the_filter() -> None:
    text = JAIL.read_text()
    assert "filter   = saslnetauth" in text and "[saslnetauth]" in text


def test_filter_bans_the_forwarded_client_never_the_proxy(tmp_path: Path) -> None:
    """Logins through a trusted proxy (docs/webmail.md): a refused forwarded login
    names the client (rip=, banned), the proxy alone logs rip=- (nothing to ban: the
    webmail host is never banned)."""
    from tests.support.serverproc import AuthClient

    require_binary("fail2ban-regex")  # skips before any server starts
    db = init_with_user(f"sqlite:///{tmp_path}/f.db", "alice", PW, "203.0.113.9")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[serve]\npenalty_max = 0\n"
        "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        '[proxies]\nnetworks = ["127.0.0.1/32"]\n'
    )
    with run_server(db, config=cfg) as srv:
        c: AuthClient = srv.connect()
        c.handshake()
        for rip, real_rip, service in [
            ("127.0.0.1", None, "smtp"),  # the proxy alone (no session yet)
            ("198.51.100.30", "127.0.0.1", "imap"),  # forwarded, refused: the client
            ("203.0.113.9", "127.0.0.1", "imap"),  # forwarded, allowed
        ]:
            c.plain(1, "alice", PW, rip=rip, service=service, real_rip=real_rip)
            c.line()
        log_text = srv.log()
    assert "rip=- proxy=127.0.0.1 reason=proxy_without_client_address" in log_text
    ips = matches(log_text, tmp_path)
    assert ips == ["198.51.100.30"], ips


def test_filter_ignores_a_suspended_credential(tmp_path: Path) -> None:
    """``reason=suspended`` is the right password from an address the user's rules
    allow (a suspension turns only an OK into a failure, docs/sending.md): its retries
    come from the user's own devices, so banning them would ban the office; a wrong
    password from anywhere, and a user name that spells the reason, still count."""
    from saslnetauth.store import SqlStore

    require_binary("fail2ban-regex")  # skips before any server starts
    db = init_with_user(f"sqlite:///{tmp_path}/f.db", "alice", PW, "192.0.2.30")
    store = SqlStore(db, cache_seconds=0)
    assert store.suspend("alice", None)
    store.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[serve]\npenalty_max = 0\n[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
    )
    attempts = [
        ("alice", PW, "192.0.2.30"),  # suspended
        ("alice", PW, "192.0.2.30"),  # its device retrying
        ("alice", "wrong", "192.0.2.31"),  # a wrong password: counts
        ("x reason=suspended y", "nope", "192.0.2.32"),  # quoted: cannot hide a failure
    ]
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        for i, (user, pw, rip) in enumerate(attempts, start=1):
            c.plain(i, user, pw, rip=rip)
            assert c.line().startswith("FAIL")
        log_text = srv.log()
    assert log_text.count("rip=192.0.2.30 reason=suspended") == 2
    ips = matches(log_text, tmp_path)
    assert sorted(ips) == ["192.0.2.31", "192.0.2.32"], ips
