"""The package installed as an admin would, on Debian 12 and 13 (issue 27).

In a throw-away copy of a fresh Debian 12 tree and of the Debian 13 chroot
(tests/support/debpkg.py): ``apt install ./saslnetauth_*.deb``; what postinst
made (user, state directory, database, modes, enabled units); ``saslnetauth
user add``; the packaged server started the way its units would start it, on
the socket unit's path, with that release's real Postfix rendering the
packaged main.cf in front of it; ``systemd-analyze verify`` of the installed
units; ``apt purge`` leaving no file behind (the file lists before and after, the
package's dependencies installed from the archive first; the upgrade tests
let ``apt install ./old.deb`` fetch them itself).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, DENIED_IP, PostfixInstance
from tests.support.debpkg import (
    RELEASES,
    added_paths,
    file_list,
    fresh_root,
    install_deb,
    install_dependencies,
    package,
    run_in,
    unit,
    unit_command,
)
from tests.support.net import wait_file_match, wait_for
from tests.support.roots import Root

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PW = "pack4ged pw"


def _owner(root: Root, path: str) -> tuple[str, str, int]:
    st = os.stat(root.outside(path))
    users = {int(f[2]): f[0] for f in _entries(root, "passwd")}
    groups = {int(f[2]): f[0] for f in _entries(root, "group")}
    return users.get(st.st_uid, "?"), groups.get(st.st_gid, "?"), stat.S_IMODE(st.st_mode)


def _entries(root: Root, name: str) -> list[list[str]]:
    return [ln.split(":") for ln in root.outside(f"/etc/{name}").read_text().splitlines() if ln]


def _check_postinst(root: Root) -> None:
    assert _owner(root, "/etc/saslnetauth/saslnetauth.toml") == ("root", "saslnetauth", 0o640)
    assert _owner(root, "/var/lib/saslnetauth") == ("saslnetauth", "saslnetauth", 0o750)
    assert _owner(root, "/var/lib/saslnetauth/saslnetauth.db") == (
        "saslnetauth",
        "saslnetauth",
        0o600,
    )
    assert run_in(root, "saslnetauth db current", check=False).returncode == 0
    for link in (
        "sockets.target.wants/saslnetauth.socket",
        "multi-user.target.wants/saslnetauth.service",
    ):
        assert root.outside(f"/etc/systemd/system/{link}").is_symlink(), f"{link} not enabled"
    jail = root.outside("/etc/fail2ban/jail.d/saslnetauth.conf").read_text()
    assert "\nenabled  = false\n" in jail and "enabled  = true" not in jail
    for shipped in (
        "postfix/main.cf",
        "exim/saslnetauth-authenticators.conf",
        "dovecot/auth-saslnetauth.conf.ext",
        "dovecot-2.4/saslnetauth.lua",
    ):
        assert root.outside(f"/usr/share/saslnetauth/{shipped}").is_file(), shipped
    man = run_in(root, "zcat /usr/share/man/man8/saslnetauth.8.gz").stdout
    assert ".TH SASLNETAUTH 8" in man and '.SS "saslnetauth user add"' in man


def _verify_units(root: Root, tmp: Path) -> None:
    analyze = root.require_binary("systemd-analyze")
    paths = [
        d + "/" + name
        for name in ("saslnetauth.service", "saslnetauth.socket")
        for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
        if root.outside(f"{d}/{name}").exists()
    ][:2]
    assert len(paths) == 2, paths
    res = subprocess.run(
        root.cmd(analyze, "verify", *paths), capture_output=True, text=True, timeout=120
    )
    ours = [ln for ln in (res.stdout + res.stderr).splitlines() if "saslnetauth" in ln]
    assert res.returncode == 0 and ours == [], res.stdout + res.stderr


def _serve_and_log_in(root: Root, tmp: Path) -> None:
    """The server as the units run it, Postfix in front of it on the socket unit's path."""
    svc = unit(root, "saslnetauth.service")["Service"]
    sock_unit = unit(root, "saslnetauth.socket")["Socket"]
    sockets, cmd = unit_command(root)
    postfix_socket = next(s for s in sockets if s.startswith("/var/spool/postfix/"))
    runtime = root.outside(f"/run/{svc['RuntimeDirectory']}")  # what systemd makes for it
    runtime.mkdir(mode=int(svc["RuntimeDirectoryMode"], 8), exist_ok=True)
    uid, gid = root.user_ids(svc["User"])
    os.chown(runtime, uid, gid)
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            root.cmd(*cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        for s in sockets:  # SocketUser, SocketGroup, SocketMode, as systemd sets them
            path = root.outside(s)
            wait_for(path.exists, timeout=30, what=f"socket {s}")
            owner = root.user_ids(sock_unit["SocketUser"])[0]
            os.chown(path, owner, _gid(root, sock_unit["SocketGroup"]))
            path.chmod(int(sock_unit["SocketMode"], 8))
        with PostfixInstance(
            tmp / "postfix",
            postfix_socket,
            root=root,
            shipped_main_cf=root.outside("/usr/share/saslnetauth/postfix/main.cf"),
        ) as pf:
            assert pf.login(ALLOWED_IP, "alice", PW) == (235, "2.7.0 Authentication successful")
            assert pf.login(DENIED_IP, "alice", PW)[0] == 535
            assert pf.login(ALLOWED_IP, "alice", "wrong")[0] == 535
        text = wait_file_match(log, r"listening: on=unix:/var/spool/postfix/", timeout=30).string
        for s in sockets:  # the inherited sockets (LISTEN_FDS), not [serve] listen
            assert f"listening: on=unix:{s}" in text, text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sock_unit.get("RemoveOnStop") == "yes":  # what stopping saslnetauth.socket does
        for s in sockets:
            root.outside(s).unlink()
    assert "Traceback" not in log.read_text(), log.read_text()


def _postfix_queue(root: Root) -> None:
    """The private directory of Postfix's queue, as Postfix makes it at its first start
    (postfix-files); the Debian 13 chroot's Postfix never started."""
    private = root.outside("/var/spool/postfix/private")
    if not private.exists():
        private.mkdir(mode=0o700, parents=True)
        os.chown(private, *root.user_ids("postfix"))


def _gid(root: Root, group: str) -> int:
    for f in _entries(root, "group"):
        if f[0] == group:
            return int(f[2])
    raise AssertionError(f"no group {group} in {root.release}")


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("release", RELEASES)
def test_apt_install_serve_postfix_then_purge_leaves_nothing(tmp_path: Path, release: str) -> None:
    deb = package(release)
    with fresh_root(release) as root:
        _postfix_queue(root)
        install_dependencies(root, deb)
        before = file_list(root)
        out = install_deb(root, deb)
        assert "saslnetauth" in out
        _check_postinst(root)
        r = run_in(
            root, f"saslnetauth user add alice --password-stdin --net {ALLOWED_IP}", stdin=PW
        )
        assert "alice" in r.stdout + r.stderr
        # the admin's root-run command left the database usable by the server's user
        assert _owner(root, "/var/lib/saslnetauth/saslnetauth.db")[:2] == (
            "saslnetauth",
            "saslnetauth",
        )
        with root.tmpdir("sna-pkg-") as tmp:
            _serve_and_log_in(root, tmp)
            _verify_units(root, tmp)
        started = time.monotonic()
        run_in(root, "apt-get purge -y -q saslnetauth", timeout=600)
        left = added_paths(root, before)
        assert left == [], f"left after purge ({time.monotonic() - started:.0f} s): {left[:40]}"
        assert not root.outside(
            "/etc/systemd/system/sockets.target.wants/saslnetauth.socket"
        ).exists()
