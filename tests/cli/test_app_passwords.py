"""``saslnetauth user app-password ...``, ``check`` and the export, through the console script."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clitools import init_with_user, run

PW = "cli main pw"
TOKEN = re.compile(r"^[a-hjkmnp-z]{4}(-[a-hjkmnp-z]{4}){8}$")


@pytest.fixture
def db(db_url: str) -> str:
    return init_with_user(db_url, "alice", PW, "192.0.2.0/24")


def _add(db: str, *args: str) -> dict[str, object]:
    r = run("user", "app-password", "add", "alice", *args, "--json", db=db)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert isinstance(data, dict)
    return data


def test_add_list_del_and_json_shapes(db: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    phone = _add(db, "--label", "phone", "--service", "IMAP", "--net", "any", "--expires", "90d")
    assert list(phone) == ["user", "label", "password", "services", "networks", "expires_at"]
    assert phone["user"] == "alice" and phone["label"] == "phone"
    assert TOKEN.match(str(phone["password"]))
    assert phone["services"] == ["imap"] and phone["networks"] == ["any"]
    expires = datetime.fromisoformat(str(phone["expires_at"]))
    assert before + timedelta(days=90) <= expires <= before + timedelta(days=90, minutes=1)
    # people's form: the password once, on a line of its own
    r = run(
        "user",
        "app-password",
        "add",
        "ALICE",
        "--label",
        "laptop",
        "--net",
        "198.51.100.0/24",
        "--until",
        "2099-12-04T18:00Z",
        db=db,
    )
    assert r.code == 0, r.err
    assert "app password laptop of alice added" in r.out and "2099-12-04 18:00 UTC" in r.out
    shown = [line.strip() for line in r.out.splitlines() if TOKEN.match(line.strip())]
    assert len(shown) == 1
    bare = run("user", "app-password", "add", "alice", "--label", "bare", db=db)
    assert bare.code == 0 and "no networks of its own" in bare.err
    # list: never a secret, never the hash
    r = run("user", "app-password", "list", "alice", "--json", db=db)
    assert r.code == 0, r.err
    listed = json.loads(r.out)
    assert [a["label"] for a in listed] == ["phone", "laptop", "bare"]
    assert list(listed[0]) == [
        "label",
        "services",
        "networks",
        "expires_at",
        "expired",
        "last_used_at",
        "created_at",
        "valid",
        "error",
        "suspended",  # docs/sending.md
    ]
    assert listed[0]["services"] == ["imap"] and listed[0]["expired"] is False
    assert [n["network"] for n in listed[0]["networks"]] == ["any"]
    assert listed[1]["expires_at"].startswith("2099-12-04T18:00:00")
    assert listed[2]["networks"] == [] and listed[2]["expires_at"] is None
    text = run("user", "app-password", "list", "alice", db=db).out
    for secret in (phone["password"], shown[0]):
        assert str(secret) not in r.out + text
        assert str(secret).replace("-", "")[7:] not in r.out + text
    assert "sha256:" not in r.out + text
    assert "phone" in text and "global only" in text
    show = run("user", "show", "alice", db=db).out  # where alice can log in, all of it
    assert "app passwords:\n  phone  (imap; any)\n  laptop  (all services; 198.51.100.0/24)" in show
    # del
    r = run("user", "app-password", "del", "alice", "phone", db=db)
    assert r.code == 0 and r.out.strip() == "app password phone of alice deleted"
    listed = json.loads(run("user", "app-password", "list", "alice", "--json", db=db).out)
    assert [a["label"] for a in listed] == ["laptop", "bare"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "ghost", "--label", "phone"), 1, "no such user: ghost"),
        (("add", "alice", "--label", "my phone"), 1, "invalid label 'my phone'"),
        (("add", "alice", "--label", "p", "--net", "10.1.2.3/8"), 1, "did you mean 10.0.0.0/8?"),
        (("add", "alice", "--label", "p", "--service", "sm tp;"), 1, "invalid service"),
        (("add", "alice", "--label", "p", "--expires", "soon"), 2, "invalid duration 'soon'"),
        (("add", "alice", "--label", "p", "--until", "friday"), 2, "invalid time 'friday'"),
        (("add", "alice", "--label", "p", "--until", "2001-01-01T00:00Z"), 2, "in the past"),
        # no zone: refused like a grant's, never read as this machine's local time
        (("add", "alice", "--label", "p", "--until", "2030-01-01T00:00:00"), 2, "no time zone"),
        (("add", "alice", "--label", "p", "--until", "2099-01-01"), 2, "no time zone"),
        (
            ("add", "alice", "--label", "p", "--expires", "1h", "--until", "2099-01-01"),
            2,
            "not both",
        ),
        (("add", "alice"), 2, "--label"),
        (("del", "alice", "nope"), 1, "user alice has no app password nope"),
        (("list", "ghost"), 1, "no such user: ghost"),
    ],
)
def test_errors_are_one_clear_line(db: str, args: tuple[str, ...], code: int, message: str) -> None:
    r = run("user", "app-password", *args, db=db)
    assert r.code == code, (r.code, r.out, r.err)
    assert message in r.err, r.err
    assert "Traceback" not in r.err


def test_a_label_once_per_user(db: str) -> None:
    _add(db, "--label", "phone")
    r = run("user", "app-password", "add", "alice", "--label", "phone", db=db)
    assert r.code == 1 and "user alice already has an app password phone" in r.err
    assert init_with_user(db, "bob", PW) == db
    assert run("user", "app-password", "add", "bob", "--label", "phone", db=db).code == 0


def test_check_names_the_credential_and_why(db: str) -> None:
    token = str(
        _add(db, "--label", "phone", "--service", "imap", "--net", "198.51.100.0/24")["password"]
    )

    def check(password: str, rip: str, service: str) -> tuple[int, str]:
        r = run(
            "check",
            "alice",
            "--rip",
            rip,
            "--service",
            service,
            "--password-stdin",
            db=db,
            stdin=password + "\n",
        )
        return r.code, r.out

    code, out = check(token, "198.51.100.7", "imap")
    assert code == 0 and "credential: app password phone" in out
    assert "allowed by: app password phone network 198.51.100.0/24 (imap)" in out
    code, out = check(token, "198.51.100.7", "smtp")
    assert code == 1 and "reason: no_network_rules" in out and "limited to imap" in out
    code, out = check(token, "192.0.2.9", "imap")  # the user's own network: not the phone's
    assert code == 1 and "reason: network" in out and "none of its networks" in out
    assert "app password phone network 198.51.100.0/24 (imap)" in out
    assert "user network" not in out
    code, out = check(PW, "198.51.100.7", "imap")
    assert code == 1 and "credential: main password" in out and "reason: network" in out
    code, out = check(PW, "192.0.2.9", "imap")
    assert code == 0 and "credential: main password" in out
    assert token not in out


def test_export_leaves_app_passwords_out_and_says_so(db: str) -> None:
    _add(db, "--label", "phone", "--net", "any")
    r = run("export", "dovecot-passwd-file", "-", "--service", "imap", db=db)
    assert r.code == 0, r.err
    assert r.out.startswith("alice:") and r.out.count("\n") == 1
    assert "allow_nets=192.0.2.0/24\n" in r.out  # the phone's `any` is not the user's
    assert "1 app password(s) of 1 user(s) not exported" in r.err


def test_help() -> None:
    for cmd in (["user", "app-password"], ["user", "app-password", "add"]):
        r = run(*cmd, "--help")
        assert r.code == 0 and "Usage:" in r.out, cmd
    text = " ".join(run("user", "app-password", "add", "--help").out.split())
    assert "print it, once" in text and "It cannot be shown again" in text
