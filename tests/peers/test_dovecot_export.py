"""The Dovecot 2.4 bridge, proven with a real Dovecot 2.3 reading the exported passwd-file.

saslnetauth exports one passwd-file per service set (``--service``) and a
private Dovecot reads them with ``passdb { driver = passwd-file args =
scheme=CRYPT username_format=%u DIR/users-%s.passwd }`` (``%s``: the
service), so the same client address is judged per service exactly as
saslnetauth itself would. ``doveadm auth test -x rip=IP -x service=SVC``
plays the client.

Users (one database):

* ``argon``: ARGON2ID hash made by saslnetauth; 127.0.0.2 (all services),
  2001:db8::/32 (smtp only);
* ``crypt``: SHA512-CRYPT from ``doveadm pw``, imported from a passwd-file
  with ``allow_nets=192.0.2.0/24,local``;
* ``roam``: from CSV with a plain-text password (hashed by saslnetauth);
  ``any`` for imap+pop3 only;
* ``nonet``: only 127.0.0.2 for smtp;
* ``off``: disabled, ``any``.

Global networks: 198.51.100.0/24 (every service), 203.0.113.0/24 (smtp).
A second database holds ``lonely``, a user without any network, exported
for sieve: its line must match no client at all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DovecotInstance, peer_tmpdir, static_userdb, wait_for
from tests.support.clitools import run
from tests.support.peers import require_binary

pytestmark = pytest.mark.peer

PW = "Tr0ub4dor&3"
WRONG = "not-the-password"


def cli(db: str, *args: str, stdin: str | None = None) -> str:
    r = run(*args, db=db, stdin=stdin)
    assert r.code == 0, f"{args}: {r.out}{r.err}"
    return r.out + r.err


def export(db: str, path: Path, *services: str) -> str:
    opts = [x for s in services for x in ("--service", s)]
    return cli(db, "export", "dovecot-passwd-file", str(path), *opts)


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[DovecotInstance, str, Path]]:
    doveadm = require_binary("doveadm")
    with peer_tmpdir("sna-export-") as tmp:
        db = f"sqlite:///{tmp}/users.db"
        cli(db, "init")
        cli(db, "user", "add", "argon", "--password-stdin", "--net", "127.0.0.2", stdin=PW + "\n")
        cli(db, "user", "net", "add", "argon", "2001:db8::/32", "--service", "smtp")
        sha = subprocess.run(
            [doveadm, "pw", "-s", "SHA512-CRYPT", "-p", PW],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert sha.startswith("{SHA512-CRYPT}$6$")
        (tmp / "old.passwd").write_text(
            f"crypt:{sha}:1000:1000::/home/crypt::allow_nets=192.0.2.0/24,local\n"
        )
        cli(db, "import", "passwd-file", str(tmp / "old.passwd"))
        (tmp / "users.csv").write_text(f"name,password,networks\nroam,{PW},any@imap+pop3\n")
        cli(db, "import", "csv", str(tmp / "users.csv"))
        cli(db, "user", "add", "nonet", "--password-stdin", stdin=PW + "\n")
        cli(db, "user", "net", "add", "nonet", "127.0.0.2", "--service", "smtp")
        cli(
            db,
            "user",
            "add",
            "off",
            "--password-stdin",
            "--net",
            "any",
            "--disabled",
            stdin=PW + "\n",
        )
        cli(db, "net", "add", "198.51.100.0/24")
        cli(db, "net", "add", "203.0.113.0/24", "--service", "smtp")
        export(db, tmp / "users-imap.passwd", "imap")
        export(db, tmp / "users-pop3.passwd")  # default: imap and pop3
        export(db, tmp / "users-smtp.passwd", "smtp")
        lonely_db = f"sqlite:///{tmp}/lonely.db"
        cli(lonely_db, "init")
        cli(lonely_db, "user", "add", "lonely", "--password-stdin", stdin=PW + "\n")
        out = export(lonely_db, tmp / "users-sieve.passwd", "sieve")
        assert "allow_nets=255.255.255.255/32" in out
        passdb = (
            "passdb {\n  driver = passwd-file\n"
            f"  args = scheme=CRYPT username_format=%u {tmp}/users-%s.passwd\n}}\n"
        )
        dovecot = DovecotInstance(
            tmp / "dovecot", passdb=passdb, userdb=static_userdb(tmp / "home"), auth_debug=True
        )
        with dovecot:
            yield dovecot, db, tmp


CASES = [
    # user, password, rip, service, accepted
    ("argon", PW, "127.0.0.2", "imap", True),
    ("argon", PW, "::ffff:127.0.0.2", "imap", True),
    ("argon", WRONG, "127.0.0.2", "imap", False),
    ("argon", PW, "127.0.0.3", "imap", False),
    ("argon", PW, None, "imap", False),
    ("argon", PW, "198.51.100.9", "imap", True),  # global, every service
    ("argon", PW, "203.0.113.9", "imap", False),  # global, smtp only
    ("argon", PW, "203.0.113.9", "smtp", True),
    ("argon", PW, "2001:db8::25", "imap", False),  # own, smtp only
    ("argon", PW, "2001:db8::25", "smtp", True),
    ("crypt", PW, "192.0.2.5", "imap", True),
    ("crypt", PW, None, "imap", True),  # local
    ("crypt", PW, "127.0.0.3", "pop3", False),
    ("crypt", WRONG, "192.0.2.5", "imap", False),
    ("roam", PW, "203.0.113.77", "imap", True),  # any for imap+pop3
    ("roam", PW, "2001:db8:1::5", "pop3", True),
    ("roam", PW, "192.0.2.200", "smtp", False),  # any is not for smtp
    ("nonet", PW, "127.0.0.2", "smtp", True),
    ("nonet", PW, "127.0.0.2", "imap", False),
    ("nonet", PW, "198.51.100.9", "imap", True),
    ("off", PW, "127.0.0.2", "imap", False),  # disabled: not in the file
    ("lonely", PW, "127.0.0.2", "sieve", False),  # 255.255.255.255/32 only
    ("lonely", PW, "203.0.113.9", "sieve", False),
    ("lonely", PW, "::1", "sieve", False),
    ("lonely", PW, None, "sieve", False),
]


@pytest.mark.parametrize(("user", "pw", "rip", "service", "ok"), CASES)
def test_dovecot_reads_the_export(
    setup: tuple[DovecotInstance, str, Path],
    user: str,
    pw: str,
    rip: str | None,
    service: str,
    ok: bool,
) -> None:
    dovecot = setup[0]
    got = dovecot.auth_test(user, pw, rip=rip, service=service)
    assert got.ok is ok, got.output


def test_fail_closed_line_is_written_and_read(setup: tuple[DovecotInstance, str, Path]) -> None:
    dovecot, _, tmp = setup
    line = (tmp / "users-sieve.passwd").read_text()
    assert line.startswith("lonely:{ARGON2ID}$argon2id$")
    assert line.endswith("::::::allow_nets=255.255.255.255/32\n")
    dovecot.auth_test("lonely", PW, rip="127.0.0.9", service="sieve")
    assert "not in allowed networks" in dovecot.log()  # Dovecot read allow_nets and refused


def test_reexport_is_picked_up(setup: tuple[DovecotInstance, str, Path]) -> None:
    dovecot, db, tmp = setup
    assert not dovecot.auth_test("late", PW, rip="127.0.0.2", service="imap").ok
    cli(db, "user", "add", "late", "--password-stdin", "--net", "127.0.0.2", stdin=PW + "\n")
    out = export(db, tmp / "users-imap.passwd", "imap")
    assert "exported 5 user(s)" in out
    wait_for(
        lambda: dovecot.auth_test("late", PW, rip="127.0.0.2", service="imap").ok or None,
        timeout=10,
        interval=0.5,
        what="Dovecot to re-read the re-exported passwd-file",
    )
    assert "unchanged" in export(db, tmp / "users-imap.passwd", "imap")
