"""saslnetauth-checkpassword under a real Dovecot 2.3 (passdb and userdb checkpassword).

Dovecot's configuration comes from dovecot-examples/dovecot/auth-saslnetauth.conf.ext,
rendered with test paths, so the shipped example cannot rot.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.dovecot import DovecotInstance, mail_ids
from tests.support.importtime import FAST_PATH_MODULES, PROFILE, imported, not_stdlib
from tests.support.net import peer_tmpdir
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dovecot-examples" / "dovecot" / "auth-saslnetauth.conf.ext"
PROGRAM = Path(sys.executable).parent / "saslnetauth-checkpassword"
PW = "ch3ck pw"
FAST = "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"


def render_example(socket: str, config: Path, home: Path) -> str:
    text = EXAMPLE.read_text()
    uid, gid = mail_ids()
    shipped_args = "/usr/local/bin/saslnetauth-checkpassword --socket /run/saslnetauth/auth-client"
    assert text.count(shipped_args) == 2, "example changed: update this test's rendering"
    text = text.replace(shipped_args, f"{PROGRAM} --socket {socket} --config {config}")
    shipped_fields = "override_fields = uid=vmail gid=vmail home=/var/vmail/%d/%n"
    assert shipped_fields in text
    return text.replace(shipped_fields, f"override_fields = uid={uid} gid={gid} home={home}/%u")


def populate(db: str) -> None:
    assert run("init", db=db).code == 0
    for args, stdin in [
        (
            [
                "user",
                "add",
                "alice",
                "--password-stdin",
                "--net",
                "127.0.0.2",
                "--net",
                "2001:db8::/32",
                "--net",
                "::1",
            ],
            PW,
        ),
        (["user", "add", "bob", "--password-stdin", "--disabled", "--net", "any"], PW),
        (["user", "add", "lou", "--password-stdin", "--net", "local"], PW),
    ]:
        r = run(*args, db=db, stdin=stdin + "\n")
        assert r.code == 0, r.err


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, object]]:
    with peer_tmpdir("sna-cp-") as tmp:
        db = f"sqlite:///{tmp}/cp.db"
        populate(db)
        cfg = tmp / "saslnetauth.toml"
        cfg.write_text(f'database_url = "{db}"\n' + FAST)
        cfg.chmod(0o644)
        sock = tmp / "auth-client"
        text = render_example(str(sock), cfg, tmp / "home")
        passdb, _, userdb = text.partition("userdb {")
        with (
            run_server(db, config=cfg, workdir=tmp) as server,
            DovecotInstance(
                tmp / "dovecot", passdb=passdb, userdb="userdb {" + userdb, protocols=("imap",)
            ) as dovecot,
        ):
            assert server.unix == str(sock)
            yield {"db": db, "cfg": cfg, "server": server, "dovecot": dovecot, "tmp": tmp}


CASES = [
    ("alice", PW, "127.0.0.2", True),
    ("alice", PW, "127.0.0.3", False),
    ("alice", PW, "2001:db8::9", True),
    ("alice", PW, "::ffff:127.0.0.2", True),
    ("alice", PW, "::ffff:127.0.0.3", False),
    ("alice", PW, None, False),
    ("lou", PW, None, True),
    ("lou", PW, "127.0.0.2", False),
    ("alice", "wrong", "127.0.0.2", False),
    ("bob", PW, "127.0.0.2", False),
    ("nobody", PW, "127.0.0.2", False),
]


@pytest.mark.parametrize(("user", "pw", "rip", "ok"), CASES)
def test_fast_path_verdicts(
    world: dict[str, object], user: str, pw: str, rip: str | None, ok: bool
) -> None:
    dovecot = world["dovecot"]
    server = world["server"]
    assert isinstance(dovecot, DovecotInstance) and isinstance(server, ServerProcess)
    before = server.log().count("auth ")
    res = dovecot.auth_test(user, pw, rip=rip, service="imap")
    assert res.ok is ok, res.output
    if ok:
        assert res.fields.get("user") == user
    # the running server decided (fast path), not the in-process fallback
    assert server.log().count("auth ") == before + 1
    assert "via=checkpassword" not in server.log()


def test_userdb_lookup(world: dict[str, object]) -> None:
    dovecot = world["dovecot"]
    assert isinstance(dovecot, DovecotInstance)
    found, out = dovecot.user_lookup("alice")
    assert found is True, out
    assert "home" in out
    found, out = dovecot.user_lookup("nobody-here")
    assert found is False, out
    found, out = dovecot.user_lookup("bob")  # disabled: not an existing user for delivery
    assert found is False, out


def test_imap_logins_from_two_addresses(world: dict[str, object]) -> None:
    dovecot = world["dovecot"]
    assert isinstance(dovecot, DovecotInstance)
    assert dovecot.imap_login("127.0.0.2", "alice", PW) is True
    assert dovecot.imap_login("127.0.0.3", "alice", PW) is False
    assert dovecot.imap_login("127.0.0.2", "alice", "wrong") is False
    assert dovecot.imap_login("::1", "alice", PW) is True


def test_fallback_path_without_server(world: dict[str, object]) -> None:
    """No server at the socket: the same verdicts, decided in-process."""
    tmp = world["tmp"]
    cfg = world["cfg"]
    assert isinstance(tmp, Path) and isinstance(cfg, Path)
    text = render_example(str(tmp / "no-such-socket"), cfg, tmp / "home")
    passdb, _, userdb = text.partition("userdb {")
    with DovecotInstance(
        tmp / "dovecot-fallback", passdb=passdb, userdb="userdb {" + userdb, protocols=("imap",)
    ) as dovecot:
        for user, pw, rip, ok in CASES:
            res = dovecot.auth_test(user, pw, rip=rip, service="imap")
            assert res.ok is ok, (user, rip, res.output)
        assert "via=checkpassword" in dovecot.log()
        assert dovecot.imap_login("127.0.0.2", "alice", PW) is True
        assert dovecot.imap_login("127.0.0.3", "alice", PW) is False
        assert dovecot.user_lookup("alice")[0] is True
        assert dovecot.user_lookup("ghost")[0] is False


def test_database_unreachable_is_internal_failure(world: dict[str, object]) -> None:
    tmp = world["tmp"]
    assert isinstance(tmp, Path)
    cfg = tmp / "down.toml"
    cfg.write_text('database_url = "postgresql+psycopg://nobody@127.0.0.1:9/none"\n')
    cfg.chmod(0o644)
    text = render_example(str(tmp / "no-such-socket-2"), cfg, tmp / "home")
    passdb, _, userdb = text.partition("userdb {")
    with DovecotInstance(
        tmp / "dovecot-down", passdb=passdb, userdb="userdb {" + userdb
    ) as dovecot:
        res = dovecot.auth_test("alice", PW, rip="127.0.0.2", service="imap")
        assert res.ok is False, res.output
        log = dovecot.log()
        assert "saslnetauth-checkpassword: database unavailable" in log, log
        assert re.search(
            r"checkpassword\(alice,127\.0\.0\.2\): Child \d+ exited with status 111", log
        ), log


def _run_program(
    env: dict[str, str], stdin3: bytes, args: list[str]
) -> subprocess.CompletedProcess[str]:
    r, w = os.pipe()
    os.write(w, stdin3)
    os.close(w)
    try:
        # the shell puts our pipe on fd 3, where Dovecot puts its input
        return subprocess.run(
            ["/bin/bash", "-c", f'exec "$@" 3<&{r}', "bash", str(PROGRAM), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=(r,),
        )
    finally:
        os.close(r)


def test_fast_path_imports_only_the_standard_library(world: dict[str, object]) -> None:
    """A login answered by the running server, to the reply program, imports the
    standard library and saslnetauth's client modules only (issue 26: this
    program starts once per login)."""
    server = world["server"]
    assert isinstance(server, ServerProcess)
    env = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2", **PROFILE}
    reply = ["/bin/sh", "-c", 'echo "USER=$USER"']
    ok = _run_program(env, f"alice\0{PW}\0\0".encode(), ["--socket", str(server.unix), *reply])
    assert ok.returncode == 0 and ok.stdout.strip() == "USER=alice", ok
    names = imported(ok.stderr)
    assert "saslnetauth.dovecot.client" in names
    assert {n for n in names if n.startswith("saslnetauth")} <= FAST_PATH_MODULES
    assert not_stdlib(names) - FAST_PATH_MODULES == set()


def test_fast_path_over_tcp(tmp_path: Path) -> None:
    """--socket inet:HOST:PORT: the client's TCP connect (the socket module is imported
    only for it); an allowed login execs the reply program, a wrong password exits 1."""
    db = f"sqlite:///{tmp_path}/cp.db"
    populate(db)
    with run_server(db, tcp=True, unix=False) as server:
        base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2"}
        sock = ["--socket", f"inet:127.0.0.1:{server.port}"]
        reply = ["/bin/sh", "-c", 'echo "USER=$USER"']
        ok = _run_program(base, f"alice\0{PW}\0\0".encode(), [*sock, *reply])
        assert ok.returncode == 0 and ok.stdout.strip() == "USER=alice", ok
        bad = _run_program(base, b"alice\0wrong\0\0", [*sock, *reply])
        assert bad.returncode == 1 and bad.stdout == "", bad


def test_program_exit_codes_and_environment(world: dict[str, object]) -> None:
    """Direct runs: fd 3 parsing, exit codes, USER/AUTHORIZED for the reply program."""
    server = world["server"]
    assert isinstance(server, ServerProcess)
    base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2"}
    reply = ["/bin/sh", "-c", 'echo "USER=$USER AUTHORIZED=${AUTHORIZED:-}"']
    sock = ["--socket", str(server.unix)]
    ok = _run_program(base, f"ALICE\0{PW}\0\0".encode(), [*sock, *reply])
    assert ok.returncode == 0 and ok.stdout.strip() == "USER=alice AUTHORIZED=", ok
    assert _run_program(base, b"alice\0wrong\0\0", [*sock, *reply]).returncode == 1
    assert (
        _run_program(
            {**base, "TCPREMOTEIP": "127.0.0.3"}, f"alice\0{PW}\0".encode(), [*sock, *reply]
        ).returncode
        == 1
    )
    assert _run_program(base, b"x" * 600, [*sock, *reply]).returncode == 1  # over 512 bytes
    assert _run_program(base, b"no-nul-at-all", [*sock, *reply]).returncode == 1
    assert _run_program(base, b"", [*sock, *reply]).returncode == 1
    master = _run_program(
        {**base, "MASTER_USER": "admin"}, f"alice\0{PW}\0\0".encode(), [*sock, *reply]
    )
    assert master.returncode == 1 and "master user" in master.stderr
    cfg = world["cfg"]
    lookup_env = {**base, "AUTHORIZED": "1"}
    found = _run_program(lookup_env, b"alice\0\0\0", [*sock, "--config", str(cfg), *reply])
    assert found.returncode == 0 and found.stdout.strip() == "USER=alice AUTHORIZED=2", found
    unknown = _run_program(lookup_env, b"ghost\0\0\0", [*sock, "--config", str(cfg), *reply])
    assert unknown.returncode == 3
    tempfail = _run_program(
        base,
        f"alice\0{PW}\0\0".encode(),
        ["--socket", "/nonexistent/sock", "--fallback", "tempfail", *reply],
    )
    assert tempfail.returncode == 111
    helped = subprocess.run([str(PROGRAM), "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "checkpassword" in helped.stdout
    for out in (ok, found, master):
        assert PW not in out.stdout + out.stderr


HEAVY_MODULES = ("sqlalchemy", "alembic", "passlib", "click", "rich", "argon2", "bcrypt")


def test_fast_path_start_up_stays_light(world: dict[str, object]) -> None:
    """The fast path (server reachable) imports none of the heavy libraries:
    Python's own import profile (PYTHONPROFILEIMPORTTIME) lists every module loaded."""
    server = world["server"]
    assert isinstance(server, ServerProcess)
    env = {
        "PATH": os.environ["PATH"],
        "SERVICE": "imap",
        "TCPREMOTEIP": "127.0.0.2",
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    reply = ["/bin/sh", "-c", 'echo "USER=$USER"']
    res = _run_program(env, f"alice\0{PW}\0\0".encode(), ["--socket", str(server.unix), *reply])
    assert res.returncode == 0 and res.stdout.strip() == "USER=alice", res
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "saslnetauth.dovecot.checkpassword" in imported, res.stderr[-2000:]
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY_MODULES)
    assert heavy == [], heavy
    # the fallback path does load them: the profile would show it
    cfg = str(world["cfg"])
    fallback = _run_program(
        env,
        f"alice\0{PW}\0\0".encode(),
        ["--socket", "/nonexistent/sock", "--config", cfg, *reply],
    )
    assert fallback.returncode == 0 and "sqlalchemy" in fallback.stderr


def test_user_name_that_is_not_utf8_fails_cleanly(world: dict[str, object]) -> None:
    """Issue 11 item 17: a user name that is not UTF-8 once gave a traceback and exit
    111 (fallback) or 1 (lookup). Now FAIL (1), or unknown user (3) for lookups,
    on the fast path and on the fallback, with one log line and no traceback."""
    server = world["server"]
    cfg = world["cfg"]
    assert isinstance(server, ServerProcess) and isinstance(cfg, Path)
    base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2"}
    reply = ["/bin/sh", "-c", 'echo "USER=$USER"']
    name = b"al\xffice"
    paths = {
        "fast": ["--socket", str(server.unix), "--config", str(cfg)],
        "fallback": ["--socket", "/nonexistent/sock", "--config", str(cfg)],
    }
    for how, args in paths.items():
        login = _run_program(base, name + f"\0{PW}\0\0".encode(), [*args, *reply])
        assert login.returncode == 1, (how, login)
        lookup = _run_program({**base, "AUTHORIZED": "1"}, name + b"\0\0\0", [*args, *reply])
        assert lookup.returncode == 3, (how, lookup)
        for res in (login, lookup):
            assert "Traceback" not in res.stderr and res.stdout == "", (how, res)
            assert res.stderr.strip() == (
                "saslnetauth-checkpassword: user name is not valid UTF-8"
            ), (how, res)


def _half_server(path: Path, *, speak: bool) -> threading.Thread:
    """A server that accepts one connection and then fails: with ``speak`` it sends
    the handshake, reads the AUTH line and hangs up; without, it never says a word."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            if not speak:
                time.sleep(12)
                return
            conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nDONE\n")
            buf = b""
            while b"AUTH\t" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("speak", [True, False])
def test_reachable_but_failing_server_is_tempfail_not_a_local_decision(
    world: dict[str, object], speak: bool
) -> None:
    """Issue 11 item 7: only an unreachable server allows the local fallback; one
    that accepted and then failed (or was slow: the client waits 10 s) is exit 111,
    so its brakes and deadline cannot be dodged by making it slow."""
    tmp, cfg = world["tmp"], world["cfg"]
    assert isinstance(tmp, Path) and isinstance(cfg, Path)
    path = tmp / f"half-{speak}"
    server = _half_server(path, speak=speak)
    base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2"}
    res = _run_program(
        base,
        f"alice\0{PW}\0\0".encode(),  # right password, allowed network: local would say OK
        ["--socket", str(path), "--config", str(cfg), "/bin/true"],
    )
    server.join(15)
    assert res.returncode == 111, res
    assert "not deciding locally" in res.stderr, res.stderr


def test_empty_password_fails_at_the_deadline_on_both_paths(world: dict[str, object]) -> None:
    """Issue 11 item 4: an empty password is refused before any verification, by the
    server (fast path) and by the fallback, and not faster than other failures."""
    server, cfg = world["server"], world["cfg"]
    assert isinstance(server, ServerProcess) and isinstance(cfg, Path)
    floor = float(re.findall(r"failure_floor=([0-9.]+)", server.log())[0])
    base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.2"}
    before = server.log().count("reason=empty_password")
    t0 = time.monotonic()
    fast = _run_program(base, b"alice\0\0\0", ["--socket", str(server.unix), "/bin/true"])
    fast_wall = time.monotonic() - t0
    assert fast.returncode == 1, fast
    assert fast_wall >= floor
    server.wait_log("reason=empty_password")
    assert server.log().count("reason=empty_password") == before + 1
    # the fallback: [serve] failure_delay (default 2 s) holds for it too
    t0 = time.monotonic()
    local = _run_program(
        base, b"alice\0\0\0", ["--socket", "/nonexistent/sock", "--config", str(cfg), "/bin/true"]
    )
    assert local.returncode == 1, local
    assert time.monotonic() - t0 >= 2.0
    assert "reason=empty_password" in local.stderr and "via=checkpassword" in local.stderr


def test_expiring_grant_before_and_after_its_end(world: dict[str, object]) -> None:
    """A grant with --expires admits through the server (Dovecot's real checkpassword
    passdb) and the in-process fallback until its end, and neither once it has passed.
    No sleep: the end is moved into the past in the database, as a script may."""
    db, server, dovecot, cfg = world["db"], world["server"], world["dovecot"], world["cfg"]
    assert isinstance(db, str) and isinstance(cfg, Path)
    assert isinstance(server, ServerProcess) and isinstance(dovecot, DovecotInstance)
    r = run("user", "net", "add", "alice", "127.0.0.4", "--expires", "1h", db=db)
    assert r.code == 0, r.err
    base = {"PATH": os.environ["PATH"], "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.4"}
    fallback = ["--socket", "/nonexistent/sock", "--config", str(cfg), "/bin/true"]
    try:
        assert dovecot.auth_test("alice", PW, rip="127.0.0.4", service="imap").ok
        assert _run_program(base, f"alice\0{PW}\0\0".encode(), fallback).returncode == 0
        import sqlalchemy as sa

        engine = sa.create_engine(db)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE user_networks SET expires_at = datetime('now', '-1 seconds') "
                    "WHERE network = '127.0.0.4'"
                )
            )
        engine.dispose()
        res = dovecot.auth_test("alice", PW, rip="127.0.0.4", service="imap")
        assert res.ok is False, res.output
        assert _run_program(base, f"alice\0{PW}\0\0".encode(), fallback).returncode == 1
        assert re.search(
            r"auth fail: user=alice service=imap rip=127\.0\.0\.4 reason=network "
            r"credentials_valid=yes",
            server.log(),
        )
    finally:
        assert run("user", "net", "del", "alice", "127.0.0.4", db=db).code == 0
