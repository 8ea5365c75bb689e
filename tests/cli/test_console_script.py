"""Every command family through the installed console script, as the in-process runner runs it.

tests/support/clitools.py runs the CLI in the test's own process by default; here
each family's command runs both ways on two databases set up alike, and the
process must answer exactly as the in-process call did (exit status, standard
output, standard error), so the console script stays tested and the runner
stays true to it. ``serve`` runs only as a process (tests/transcript).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.clitools import Result, init_with_user, run

#: A Dovecot passwd-file line for bob, imported on both databases.
PASSWD = "bob:{PLAIN}b0b-pw::::::allow_nets=10.0.0.0/8\n"

#: family -> (arguments, standard input)
FAMILIES: dict[str, tuple[list[str], str | None]] = {
    "help": (["--help"], None),
    "version": (["--version"], None),
    "init": (["init"], None),
    "db": (["db", "current"], None),
    "user": (["user", "list", "--json"], None),
    "user-error": (["user", "add", "alice", "--password-stdin"], "other\n"),
    "net": (["net", "add", "198.51.100.0/24", "--comment", "office"], None),
    "check": (["check", "alice", "--rip", "192.0.2.9", "--password-stdin"], "s3cret\n"),
    "check-rejected": (["check", "alice", "--rip", "203.0.113.9", "--password-stdin"], "s3cret\n"),
    "report": (["report"], None),
    "geoip": (["geoip", "status"], None),
    "sending": (["sending", "show", "alice"], None),
    "import": (["import", "passwd-file", "-"], PASSWD),
    "export": (["export", "dovecot-passwd-file", "-"], None),
    "usage": (["user", "frobnicate"], None),
}


def _same(r: Result, db: str) -> tuple[int, str, str]:
    """The result with the database's name, the clock's minute and the salted hashes
    (alice's password hashed on each database) taken out."""

    def plain(text: str) -> str:
        text = text.replace(db, "DB").replace(db.removeprefix("sqlite:///"), "DB")
        text = re.sub(r"\$argon2id\$[^:]*", "HASH", text)
        return re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?", "TIME", text)

    return r.code, plain(r.out), plain(r.err)


@pytest.mark.parametrize("family", FAMILIES)
def test_console_script_answers_as_in_process(tmp_path: Path, family: str) -> None:
    args, stdin = FAMILIES[family]
    results = []
    for process in (False, True):
        db = f"sqlite:///{tmp_path}/{'process' if process else 'inproc'}.db"
        if family != "init":
            init_with_user(db, "alice", "s3cret", "192.0.2.0/24")
            assert run("import", "passwd-file", "-", db=db, stdin=PASSWD).code == 0
        r = run(*args, db=db, stdin=stdin, process=process)
        results.append(_same(r, db))
    assert results[0] == results[1]
    assert results[1][1] or results[1][2]  # it said something
