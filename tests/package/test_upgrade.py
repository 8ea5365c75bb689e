"""Upgrading the package keeps the data and migrates the schema (issue 27).

The "previous release" is the package built from an older commit of this
repository whose migration head is 0003 (``.ci/build-deb --old``, version
0.1.0~schema3, cached). In a fresh Debian 12 tree: ``apt install ./old.deb`` (its dependencies fetched by apt), users
and networks added with the old CLI, ``apt install ./new.deb``; then the
schema is current, a copy of the SQLite file from before the migration lies
beside it (still at 0003), and the same logins are accepted and refused.
Also piuparts on Debian 12: install, upgrade from the old package, remove,
purge, with its checks for files left behind.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, DENIED_IP
from tests.support.debpkg import (
    BOOKWORM_TGZ,
    CACHE,
    fresh_root,
    install_deb,
    package,
    run_in,
)
from tests.support.net import PeerError, tail
from tests.support.peers import missing
from tests.support.roots import Root

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PW = "upgr4de pw"
OLD_HEAD = "0003"


def _revision(path: Path) -> str:
    """The schema revision of a SQLite file nobody else has open."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:  # writes no -wal
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _current(root: Root) -> str:
    """``saslnetauth db current`` (the live database: its -wal is the server's)."""
    return run_in(root, "saslnetauth db current", check=False).stdout


def _check(root: Root, user: str, rip: str, password: str = PW) -> int:
    cmd = f"saslnetauth check {user} --rip {rip} --password-stdin"
    return run_in(root, cmd, stdin=password, check=False).returncode


@pytest.mark.timeout(2400)
def test_upgrade_from_the_previous_schema_keeps_users_and_networks() -> None:
    """On Debian 12 (the Debian 13 package runs the same maintainer scripts; its
    install test covers that release, and CI's time is counted)."""
    old, new = package("debian12", old=True), package("debian12")
    with fresh_root("debian12") as root:
        install_deb(root, old)
        db = root.outside("/var/lib/saslnetauth/saslnetauth.db")
        assert f"revision: {OLD_HEAD}" in _current(root)
        add = f"saslnetauth user add alice --password-stdin --net {ALLOWED_IP}"
        run_in(root, add, stdin=PW)
        run_in(root, "saslnetauth user add bob --password-stdin --net 192.0.2.0/24", stdin=PW)
        run_in(root, "saslnetauth user disable bob")
        assert _check(root, "alice", ALLOWED_IP) == 0

        out = install_deb(root, new)
        assert "before the schema upgrade" in out, out
        assert run_in(root, "saslnetauth db current", check=False).returncode == 0
        assert f"revision: {OLD_HEAD}" not in _current(root)
        backups = sorted(db.parent.glob("saslnetauth.db.before-*"))
        assert len(backups) == 1, backups  # one file: no -wal or -shm beside it
        assert _revision(backups[0]).startswith(OLD_HEAD)
        assert oct(os.stat(backups[0]).st_mode & 0o777) == "0o600"
        assert os.stat(backups[0]).st_uid == os.stat(db).st_uid
        # the data: alice from her network only, bob still disabled
        assert _check(root, "alice", ALLOWED_IP) == 0
        assert _check(root, "alice", DENIED_IP) == 1
        assert _check(root, "alice", ALLOWED_IP, "wrong") == 1
        assert _check(root, "bob", "192.0.2.7") == 1
        shown = run_in(root, "saslnetauth user show bob").stdout
        assert "192.0.2.0/24" in shown
        # a second install of the same version migrates nothing and copies nothing
        run_in(root, "dpkg-reconfigure saslnetauth 2>&1 || dpkg --configure -a")
        assert len(list(db.parent.glob("saslnetauth.db.before-*"))) == 1


def _mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


@pytest.mark.timeout(2400)
def test_piuparts_install_upgrade_remove_purge_on_debian12() -> None:
    """piuparts installs the package, purges it, installs the previous one from a
    local repository, upgrades it to this one, removes and purges it, checking
    for files left behind and for broken symbolic links on the way."""
    old, new = package("debian12", old=True), package("debian12")
    if not os.access("/usr/sbin/piuparts", os.X_OK):
        missing("program piuparts (bash .ci/install)")
    if not BOOKWORM_TGZ.exists():
        missing(f"piuparts' base tarball {BOOKWORM_TGZ} (bash .ci/debian12-root)")
    repo = Path(tempfile.mkdtemp(prefix="piuparts-repo-", dir=CACHE))
    repo.chmod(0o755)
    try:
        (repo / old.name).write_bytes(old.read_bytes())
        packages = subprocess.run(
            ["dpkg-scanpackages", "."], cwd=repo, capture_output=True, check=True, timeout=60
        ).stdout
        (repo / "Packages").write_bytes(packages)
        res = subprocess.run(
            [
                "piuparts",
                "--basetgz",
                str(BOOKWORM_TGZ),
                "--distribution",
                "bookworm",
                "--mirror",
                _mirror(),
                "--bindmount",
                str(repo),
                "--extra-repo",
                f"deb [trusted=yes] file://{repo} ./",
                "--skip-logrotatefiles-test",
                str(new),
            ],
            capture_output=True,
            text=True,
            timeout=2000,
            check=False,
        )
    finally:
        subprocess.run(["rm", "-rf", str(repo)], check=False)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        raise PeerError(f"piuparts exited {res.returncode}:\n{tail(log, 120)}")
    assert "PASS: All tests." in log, tail(log, 60)
    # the upgrade path ran (piuparts skips it when apt does not know the old version)
    assert "Can't test upgrade" not in log, tail(log, 60)
