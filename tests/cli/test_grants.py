"""Expiring grants through the installed CLI: --expires/--until, renewals, user show,
net list and their --json, check's explanation, db purge-expired, imports that keep
expiring grants, and the passwd-file export's summary."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.clitools import run

PW = "s3cret pw"
#: crypt(3) SHA512 of "pw" (an exportable hash; {PLAIN} is not written)
SHA512 = "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


@pytest.fixture
def db(sqlite_url: str) -> str:
    assert run("init", db=sqlite_url).code == 0
    r = run(
        "user", "add", "alice", "--hash", "{PLAIN}" + PW, "--net", "192.0.2.0/24", db=sqlite_url
    )
    assert r.code == 0, r.err
    return sqlite_url


def sql(db: str, statement: str) -> None:
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def networks(db: str, name: str = "alice") -> dict[str, dict[str, object]]:
    r = run("user", "show", name, "--json", db=db)
    assert r.code == 0, r.err
    return {n["network"]: n for n in json.loads(r.out)["networks"]}


def test_expires_and_until_are_stored_and_shown(db: str) -> None:
    before = time.time()
    r = run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "8h", db=db)
    assert r.code == 0, r.err
    assert "network 198.51.100.0/24 added (all services), expires in 7 h 59 min" in r.out
    r = run("user", "net", "add", "alice", "203.0.113.0/24", "--until", "2099-12-04T19:00+01:00",
            "--service", "imap", db=db)  # fmt: skip
    assert r.code == 0, r.err
    nets = networks(db)
    assert nets["192.0.2.0/24"]["expires_at"] is None and nets["192.0.2.0/24"]["expired"] is False
    eight = nets["198.51.100.0/24"]
    assert isinstance(eight["expires_at"], str) and ISO_UTC.match(eight["expires_at"])
    ends = datetime.fromisoformat(eight["expires_at"]).timestamp()
    assert before + 8 * 3600 - 1 <= ends <= time.time() + 8 * 3600
    assert nets["203.0.113.0/24"]["expires_at"] == "2099-12-04T18:00:00+00:00"
    assert set(eight) == {
        "network", "services", "comment", "created_at", "expires_at", "expired", "valid", "error"
    }  # fmt: skip

    text = run("user", "show", "alice", db=db).out
    assert re.search(r"198\.51\.100\.0/24  \(all services\)  until \S+Z \(7 h 59 min\)", text)
    listed = " ".join(run("user", "list", db=db).out.split())  # rich wraps long cells
    assert "203.0.113.0/24 (imap) [until 2099-12-04T18:00:00Z" in listed

    # an expired grant is marked, in text and JSON
    sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-1 hours') "
            "WHERE network = '198.51.100.0/24'")  # fmt: skip
    assert networks(db)["198.51.100.0/24"]["expired"] is True
    assert re.search(r"198\.51\.100\.0/24  \(all services\)  EXPIRED \S+Z", run(
        "user", "show", "alice", db=db).out)  # fmt: skip


def test_global_network_expiry_and_list(db: str) -> None:
    r = run("net", "add", "10.0.0.0/8", "--until", "2099-01-01T00:00Z", "--comment", "fair", db=db)
    assert r.code == 0, r.err
    assert "global network 10.0.0.0/8 added (all services), expires in" in r.out
    assert run("net", "add", "10.20.0.0/16", db=db).code == 0
    sql(db, "INSERT INTO global_networks (network, expires_at) VALUES ('10.30.0.0/16', "
            "datetime('now', '-2 days'))")  # fmt: skip
    out = run("net", "list", db=db).out
    assert re.search(
        r"10\.0\.0\.0/8\s+all\s+until 2099-01-01T00:00:00Z \(\d+ d( \d+ h)?\)\s+fair", out
    )
    assert re.search(r"10\.20\.0\.0/16\s+all\s+never", out)
    assert re.search(r"10\.30\.0\.0/16\s+all\s+EXPIRED ", out)
    listed = {n["network"]: n for n in json.loads(run("net", "list", "--json", db=db).out)}
    assert listed["10.0.0.0/8"]["expires_at"] == "2099-01-01T00:00:00+00:00"
    assert [listed[n]["expired"] for n in ("10.0.0.0/8", "10.20.0.0/16", "10.30.0.0/16")] == [
        False, False, True
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "0h"], "longer than zero"),
        (["--expires", "-3h"], "invalid duration"),
        (["--expires", "8 hours"], "e.g. 30m, 8h, 3d, 2w"),
        (["--until", "2099-12-04T18:00"], "has no time zone"),
        (["--until", "2001-12-04T18:00Z"], "is in the past"),
        (["--until", "friday"], "ISO 8601 with a time zone"),
        (["--expires", "8h", "--until", "2099-12-04T18:00Z"], "not both"),
    ],
)
def test_bad_expiry_options_are_usage_errors(db: str, args: list[str], message: str) -> None:
    """The same for a grant and an app password (issue 21, item 5: an app password
    read a time without zone as this machine's local time, and had a parser of its
    own with other messages and exit codes)."""
    for cmd in (
        ["user", "net", "add", "alice", "198.51.100.0/24"],
        ["net", "add", "10.0.0.0/8"],
        ["user", "app-password", "add", "alice", "--label", "p"],
    ):
        r = run(*cmd, *args, db=db)
        assert r.code == 2 and message in r.err, (cmd, r.code, r.err)
    assert "198.51.100.0/24" not in networks(db)
    assert json.loads(run("user", "app-password", "list", "alice", "--json", db=db).out) == []


def test_one_duration_parser_for_grants_app_passwords_and_report(db: str) -> None:
    """A unit in capitals was a grant's hour but no app password's or report's."""
    r = run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "8H", db=db)
    assert r.code == 0 and re.search(r"expires in (8 h|7 h 59 min) ", r.out), (r.out, r.err)
    r = run("user", "app-password", "add", "alice", "--label", "p", "--expires", "8H", db=db)
    assert r.code == 0, r.err
    assert run("report", "--since", "24H", db=db).code == 0


def test_renewal_rules(db: str) -> None:
    add = ("user", "net", "add", "alice")
    assert run(*add, "198.51.100.0/24", "--service", "imap", "--expires", "1h", db=db).code == 0
    r = run(*add, "198.51.100.0/24", "--service", "imap", "--expires", "3d", db=db)
    assert r.code == 0 and "renewed (imap; was until " in r.out and "expires in 2 d 23 h" in r.out
    r = run(*add, "198.51.100.0/24", "--expires", "3d", db=db)
    assert r.code == 1 and "for imap, not all services" in r.err
    r = run(*add, "198.51.100.0/24", "--service", "imap", db=db)
    assert r.code == 0 and r.out.rstrip().endswith("now permanent")
    assert networks(db)["198.51.100.0/24"]["expires_at"] is None
    r = run(*add, "192.0.2.0/24", "--expires", "1h", db=db)
    assert r.code == 1 and "remove it first: saslnetauth user net del alice 192.0.2.0/24" in r.err
    assert networks(db)["192.0.2.0/24"]["expires_at"] is None


def test_check_explains_the_grant_and_expired_ones(db: str) -> None:
    assert run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "3h", db=db).code == 0
    r = run("check", "alice", "--rip", "198.51.100.9", "--password-stdin", db=db, stdin=PW + "\n")
    assert r.code == 0, r.out + r.err
    assert "allowed by: user network 198.51.100.0/24 (all services, until " in r.out
    assert re.search(r"matched grant: expires in 2 h 59 min \(\S+Z\)", r.out), r.out
    sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-3 hours') "
            "WHERE network = '198.51.100.0/24'")  # fmt: skip
    r = run("check", "alice", "--rip", "198.51.100.9", "--password-stdin", db=db, stdin=PW + "\n")
    assert r.code == 1
    assert "reason: network" in r.out
    assert "expired grants (they no longer apply to smtp):" in r.out
    assert re.search(r"user network 198\.51\.100\.0/24 \(all services, until \S+\): EXPIRED 3 h ago",
                     r.out)  # fmt: skip


def test_purge_expired(db: str) -> None:
    for net, when in (("198.51.100.0/24", "-8 days"), ("203.0.113.0/24", "-1 days")):
        assert run("user", "net", "add", "alice", net, "--expires", "1h", db=db).code == 0
        sql(db, f"UPDATE user_networks SET expires_at = datetime('now', '{when}') "  # noqa: S608
                f"WHERE network = '{net}'")  # fmt: skip
    sql(db, "INSERT INTO global_networks (network, expires_at) VALUES ('10.0.0.0/8', "
            "datetime('now', '-30 days')), ('10.1.0.0/16', 'never')")  # fmt: skip
    r = run("db", "purge-expired", "--dry-run", db=db)
    assert r.code == 0 and "would delete 2 grant(s) expired more than 7 day(s) ago" in r.out
    assert len(networks(db)) == 3
    r = run("db", "purge-expired", db=db)
    assert r.code == 0, r.err
    assert "user alice 198.51.100.0/24 until" in r.out and "global 10.0.0.0/8 until" in r.out
    assert set(networks(db)) == {"192.0.2.0/24", "203.0.113.0/24"}
    listed = [n["network"] for n in json.loads(run("net", "list", "--json", db=db).out)]
    assert listed == ["10.1.0.0/16"]  # an invalid expiry is left for the admin to see
    assert "10.1.0.0/16 [invalid]" in run("net", "list", db=db).out  # not eaten as markup
    r = run("db", "purge-expired", "--keep-days", "0", db=db)
    assert "deleted 1 grant(s)" in r.out and set(networks(db)) == {"192.0.2.0/24"}


def test_import_keeps_expiring_grants(db: str, tmp_path: Path) -> None:
    """An import writes permanent networks: a grant it does not name stays, one it names
    becomes permanent, as the file says."""
    assert run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "1d", db=db).code == 0
    assert run("user", "net", "add", "alice", "203.0.113.0/24", "--expires", "1d", db=db).code == 0
    f = tmp_path / "users.csv"
    f.write_text(f"name,password_hash,networks\nalice,{{PLAIN}}{PW},192.0.2.0/24 203.0.113.0/24\n")
    r = run("import", "csv", str(f), "--json", db=db)
    assert r.code == 0, r.err
    nets = networks(db)
    assert set(nets) == {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"}
    assert nets["198.51.100.0/24"]["expires_at"] is not None
    assert nets["203.0.113.0/24"]["expires_at"] is None
    again = json.loads(run("import", "csv", str(f), "--json", db=db).out)
    assert (again["updated"], again["unchanged"]) == (0, 1)


def test_export_leaves_out_expired_and_names_the_next_expiry(db: str) -> None:
    r = run("user", "passwd", "alice", "--hash", "{SHA512-CRYPT}" + SHA512, db=db)
    assert r.code == 0, r.err
    assert run("user", "net", "add", "alice", "198.51.100.0/24", "--expires", "3h", db=db).code == 0
    assert run("user", "net", "add", "alice", "203.0.113.0/24", "--expires", "1h", db=db).code == 0
    assert run("net", "add", "10.0.0.0/8", "--expires", "2w", db=db).code == 0
    sql(db, "UPDATE user_networks SET expires_at = datetime('now', '-1 minutes') "
            "WHERE network = '203.0.113.0/24'")  # fmt: skip
    r = run("export", "dovecot-passwd-file", "-", db=db)
    assert r.code == 0, r.err
    assert (
        r.out
        == f"alice:{{SHA512-CRYPT}}{SHA512}::::::allow_nets=192.0.2.0/24,198.51.100.0/24,10.0.0.0/8\n"
    )
    assert "note: 1 expired network grant(s) left out" in r.err
    assert re.search(
        r"note: the next network grant in this file expires in 2 h 59 min \(\S+Z\); "
        r"it stays valid in the file until the next export", r.err)  # fmt: skip
    # nothing expiring: no such note
    for net in ("198.51.100.0/24", "203.0.113.0/24"):
        assert run("user", "net", "del", "alice", net, db=db).code == 0
    assert run("net", "del", "10.0.0.0/8", db=db).code == 0
    assert "next network grant" not in run("export", "dovecot-passwd-file", "-", db=db).err


def test_export_summary_unit(db: str) -> None:
    """Export summary details also hold without the CLI: a grant of a user who is not
    written does not count, a global one does."""
    from saslnetauth.admin.exporters import dovecot_passwd_file
    from saslnetauth.credentials.passwords import PasswordHasher
    from saslnetauth.policy.model import UserRecord
    from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet

    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    grant = NetworkRule.parse("198.51.100.0/24", scope="user", expires=now + 60)
    off = UserRecord(1, "off", "{PLAIN}x", enabled=False, rules=RuleSet([grant]))
    result = dovecot_passwd_file([off], [], ["imap"], PasswordHasher("ARGON2ID"), now=now)
    assert result.next_expiry is None and result.lines == []
    on = UserRecord(2, "on", "{PLAIN}x", enabled=True, rules=RuleSet([grant]))
    glob = NetworkRule.parse("10.0.0.0/8", expires=now + 30)
    result = dovecot_passwd_file([on], [glob], ["imap"], PasswordHasher("ARGON2ID"), now=now)
    assert result.next_expiry == now + 30
    result = dovecot_passwd_file([on], [glob], ["imap"], PasswordHasher("ARGON2ID"), now=now + 30)
    assert result.next_expiry == now + 60 and result.expired_left_out == 1
    assert result.lines == ["on:{PLAIN}x::::::allow_nets=198.51.100.0/24"]
