"""systemd socket activation (LISTEN_FDS) with the real systemd-socket-activate, and the units."""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.chrootvenv import venv
from tests.support.clitools import run
from tests.support.net import wait_for
from tests.support.peers import require_binary
from tests.support.roots import HOST, trixie
from tests.support.serverproc import AuthClient

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "dovecot-examples" / "systemd"
BIN = Path(sys.executable).parent


def test_socket_activation(tmp_path: Path) -> None:
    activate = require_binary("systemd-socket-activate")
    db = f"sqlite:///{tmp_path}/sa.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}pw", "--net", "127.0.0.2", db=db).code == 0
    sock_a, sock_b = tmp_path / "a.sock", tmp_path / "b.sock"
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    cmd = [
        activate,
        "-l",
        str(sock_a),
        "-l",
        str(sock_b),
        str(BIN / "saslnetauth"),
        "--database",
        db,
        "serve",
        "--failure-delay",
        "0",
        "--listen",
        f"unix:{tmp_path}/never-created.sock",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        # systemd-socket-activate holds the sockets and starts us on the first connection
        wait_for(lambda: sock_a.exists() and sock_b.exists(), timeout=10, what="sockets")
        for path in (sock_a, sock_b):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(str(path))
            c = AuthClient(s)
            c.handshake()
            c.plain(1, "alice", "pw", rip="127.0.0.2")
            assert c.line() == "OK\t1\tuser=alice"
            c.plain(2, "alice", "pw", rip="127.0.0.3")
            assert c.line().startswith("FAIL\t2\t")
            c.close()
        text = log.read_text()
        assert f"listening: on=unix:{sock_a}" in text and f"listening: on=unix:{sock_b}" in text
        assert not (tmp_path / "never-created.sock").exists()  # inherited sockets win
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        time.sleep(0.1)


def test_units_parse_and_are_hardened() -> None:
    svc = configparser.ConfigParser(strict=False, interpolation=None)
    svc.optionxform = str  # type: ignore[assignment,method-assign]
    svc.read(UNITS / "saslnetauth.service")
    s = svc["Service"]
    assert s["Type"] == "notify"
    assert s["ExecStart"].split()[1:] == ["--config", "/etc/saslnetauth/saslnetauth.toml", "serve"]
    assert s["User"] == "saslnetauth"
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ]:
        assert s[key] == value
    sock = configparser.ConfigParser(strict=False, interpolation=None)
    sock.optionxform = str  # type: ignore[assignment,method-assign]
    sock.read(UNITS / "saslnetauth.socket")
    assert "/var/spool/postfix/private/saslnetauth" in (UNITS / "saslnetauth.socket").read_text()
    assert sock["Socket"]["SocketMode"] == "0660"


@pytest.mark.parametrize("release", ["debian12", "debian13"])
def test_systemd_analyze_verify(tmp_path: Path, release: str) -> None:
    """The shipped units with systemd 252 (Debian 12, this machine) and 257 (Debian 13,
    the chroot, where ExecStart is saslnetauth installed under Debian 13's Python)."""
    with contextlib.ExitStack() as stack:
        if release == "debian12":
            root, units, program = HOST, tmp_path, str(BIN / "saslnetauth")
        else:
            root = trixie()
            units = stack.enter_context(root.tmpdir("sna-units-"))
            program = str(Path(venv(root, tmp_path / "venv.log").python).parent / "saslnetauth")
        analyze = root.require_binary("systemd-analyze")
        for name in ("saslnetauth.service", "saslnetauth.socket"):
            text = (UNITS / name).read_text().replace("/usr/local/bin/saslnetauth", program)
            (units / name).write_text(text)
        where = root.inside(units)
        res = subprocess.run(
            root.cmd(
                analyze,
                "verify",
                f"{where}/saslnetauth.service",
                f"{where}/saslnetauth.socket",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    ours = [ln for ln in (res.stdout + res.stderr).splitlines() if where in ln]
    assert res.returncode == 0 and ours == [], res.stdout + res.stderr


def test_socket_activated_sockets_get_the_same_peer_checks(tmp_path: Path) -> None:
    """Issue 11 item 10: sockets systemd passes us are checked like our own: a UNIX
    client of a user not allowed is closed before the handshake, and a TCP socket on
    a non-loopback address stops the start."""
    import tempfile

    from tests.support.serverproc import NOBODY, as_user, free_port, results

    activate = require_binary("systemd-socket-activate")
    db = f"sqlite:///{tmp_path}/sa.db"
    assert run("init", db=db).code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    serve = [str(BIN / "saslnetauth"), "--database", db, "serve", "--failure-delay", "0"]
    with tempfile.TemporaryDirectory(prefix="sna-sa-") as public:
        os.chmod(public, 0o755)  # noqa: S103 - the other user must reach the socket
        path = Path(public) / "auth.sock"
        log = tmp_path / "unix.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [activate, "-l", str(path), *serve], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        try:
            wait_for(path.exists, timeout=10, what="socket")
            path.chmod(0o666)  # only our check stands between the other user and us
            # The first connection starts the server (its start-up may take seconds on
            # a busy machine): root's, which may, and which waits as long as needed;
            # then the other user's gets the server's answer within its 3 s.
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(str(path))
            assert AuthClient(s).handshake()[0] == "VERSION\t1\t2"  # root may
            s.close()
            nobody = as_user(NOBODY, str(path))
            assert results(nobody, 1) == ["closed"]
            assert nobody.wait(20) == 0
            wait_for(
                lambda: "reason=peer_not_allowed uid=65534" in log.read_text(),
                timeout=10,
                what="refusal logged",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    port = free_port()
    log = tmp_path / "inet.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [activate, "-l", f"0.0.0.0:{port}", *serve],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: _port_open(port), timeout=10, what="activation socket")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            try:
                greeting = c.recv(64)
            except ConnectionResetError:
                greeting = b""
            assert greeting == b"", "we refused to serve on it"
        wait_for(
            lambda: "refusing to listen on inet:0.0.0.0" in log.read_text(),
            timeout=20,
            what="refusal to serve a non-loopback socket",
        )
        assert "(from systemd)" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
