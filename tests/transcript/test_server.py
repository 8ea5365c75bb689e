"""Transcript tests: a scripted client against the real ``saslnetauth serve`` over real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.remotehost import RemoteHost, remote_host
from tests.support.serverproc import AuthClient, ServerProcess, b64, free_port, run_server

PW = "s3cret pw"
FAST_CONFIG = """
[passwords]
argon2_memory_kib = 1024
argon2_time_cost = 1
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    return init_with_user(
        f"sqlite:///{tmp_path}/serve.db", "alice", PW, "127.0.0.2", "2001:db8::/32"
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "fast.toml"
    p.write_text(FAST_CONFIG)
    return p


@pytest.fixture
def server(db: str, config: Path) -> Iterator[ServerProcess]:
    with run_server(db, config=config, tcp=True) as srv:
        yield srv


def test_handshake_order(server: ServerProcess) -> None:
    c1, c2 = server.connect(), server.connect()
    lines = c1.handshake()
    assert lines[0] == "VERSION\t1\t2"
    assert lines[1:3] == ["MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext"]
    assert [ln.split("\t")[0] for ln in lines[3:]] == ["SPID", "CUID", "COOKIE", "DONE"]
    assert lines[3] == f"SPID\t{server.proc.pid}"
    assert re.fullmatch(r"COOKIE\t[0-9a-f]{32}", lines[5])
    other = c2.handshake()
    assert other[4] != lines[4] and other[5] != lines[5]  # CUID and COOKIE differ per connection


def test_plain_ok_and_network_fail_over_unix_and_tcp(server: ServerProcess) -> None:
    for c in (server.connect(), _tcp(server)):
        c.handshake()
        c.plain(1, "alice", PW, rip="127.0.0.2")
        assert c.line() == "OK\t1\tuser=alice"
        c.plain(2, "Alice", PW, rip="127.0.0.3")
        assert c.line() == "FAIL\t2\tuser=alice\treason=Authentication failed"
        c.plain(3, "alice", PW, rip="::ffff:127.0.0.2")
        assert c.line() == "OK\t3\tuser=alice"
        c.plain(4, "alice", PW, rip="2001:db8::7")
        assert c.line() == "OK\t4\tuser=alice"
        c.plain(5, "alice", PW, rip=None)
        assert c.line().startswith("FAIL\t5\t")


def _tcp(server: ServerProcess) -> AuthClient:
    assert server.port
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return AuthClient(s)


def test_every_failure_cause_gives_the_same_reply(server: ServerProcess, db: str) -> None:
    c = server.connect()
    c.handshake()
    replies = {}
    c.plain(1, "alice", "wrong", rip="127.0.0.2")
    replies["bad_password"] = c.line()
    c.plain(1, "alice", PW, rip="198.51.100.1")
    replies["network"] = c.line()
    assert run("user", "disable", "alice", db=db).code == 0
    c.plain(1, "alice", PW, rip="127.0.0.2")
    replies["disabled"] = c.line()
    assert run("user", "del", "alice", db=db).code == 0
    c.plain(1, "alice", PW, rip="127.0.0.2")
    replies["unknown_user"] = c.line()
    assert len(set(replies.values())) == 1, replies
    assert replies["network"] == "FAIL\t1\tuser=alice\treason=Authentication failed"
    log = server.log()
    for reason in ("bad_password", "network credentials_valid=yes", "disabled", "unknown_user"):
        assert f"reason={reason}" in log


def test_pipelined_requests_answered_by_id(server: ServerProcess) -> None:
    c = server.connect()
    c.handshake()
    batch = ""
    for req_id, (pw, rip) in {
        11: (PW, "127.0.0.2"),
        12: ("nope", "127.0.0.2"),
        13: (PW, "127.0.0.3"),
        14: (PW, "127.0.0.2"),
    }.items():
        resp = b64(f"\0alice\0{pw}")
        batch += (
            f"AUTH\t{req_id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip={rip}\tresp={resp}\n"
        )
    c.send(batch)
    got = {int(line.split("\t")[1]): line.split("\t")[0] for line in (c.line() for _ in range(4))}
    assert got == {11: "OK", 12: "FAIL", 13: "FAIL", 14: "OK"}


def test_login_mechanism_cont_flow(server: ServerProcess) -> None:
    c = server.connect()
    c.handshake()
    c.send("AUTH\t1\tLOGIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.2\n")
    assert c.line() == f"CONT\t1\t{b64('Username:')}"
    c.send(f"CONT\t1\t{b64('alice')}\n")
    assert c.line() == f"CONT\t1\t{b64('Password:')}"
    c.send(f"CONT\t1\t{b64(PW)}\n")
    assert c.line() == "OK\t1\tuser=alice"
    # username as initial response
    c.send(f"AUTH\t2\tLOGIN\tservice=smtp\trip=127.0.0.3\tresp={b64('alice')}\n")
    assert c.line() == f"CONT\t2\t{b64('Password:')}"
    c.send(f"CONT\t2\t{b64(PW)}\n")
    assert c.line() == "FAIL\t2\tuser=alice\treason=Authentication failed"


def test_plain_without_initial_response_and_exim_style_params(server: ServerProcess) -> None:
    c = server.connect()
    c.handshake()
    # Exim: service, secured, rip, lip=NULL, nologin, empty resp= (= no initial response)
    c.send("AUTH\t1\tPLAIN\tservice=smtp\tsecured\trip=127.0.0.2\tlip=NULL\tnologin\tresp=\n")
    assert c.line() == "CONT\t1\t"
    c.send(f"CONT\t1\t{b64(chr(0) + 'alice' + chr(0) + PW)}\n")
    assert c.line() == "OK\t1\tuser=alice"
    # Dovecot's own clients add unknown parameters: ignored
    resp = b64(f"\0alice\0{PW}")
    c.send(
        f"AUTH\t2\tPLAIN\tservice=imap\tsession=abc\tlport=143\trport=5555\tlocal_name=x\t"
        f"valid-client-cert\trip=127.0.0.2\tlip=\tresp={resp}\n"
    )
    assert c.line() == "OK\t2\tuser=alice"


def test_malformed_sasl_fails_but_connection_lives(server: ServerProcess) -> None:
    c = server.connect()
    c.handshake()
    c.send("AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.2\tresp=!!notbase64!!\n")
    assert c.line() == "FAIL\t1\treason=Authentication failed"
    c.send("AUTH\t2\tPLAIN\tservice=smtp\trip=127.0.0.2\tresp==\n")  # Postfix "AUTH PLAIN ="
    assert c.line().startswith("FAIL\t2")
    c.plain(3, "alice", PW, authzid="bob")  # act as another user: refused
    assert c.line().startswith("FAIL\t3")
    c.plain(4, "alice", PW, authzid="alice")  # same as authcid: fine
    assert c.line() == "OK\t4\tuser=alice"
    c.send("AUTH\t5\tCRAM-MD5\tservice=smtp\n")
    assert c.line() == "FAIL\t5\treason=Unsupported authentication mechanism"
    c.send("CONT\t99\tAAAA\n")  # unknown id
    assert c.line().startswith("FAIL\t99")
    c.send("FOO\tbar\n")  # unknown command: ignored
    c.plain(6, "alice", PW)
    assert c.line() == "OK\t6\tuser=alice"


@pytest.mark.parametrize(
    "payload",
    [
        b"X" * (16 * 1024 + 10) + b"\n",
        b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tresp=" + b"A" * 20000,
        b"VERSION\t2\t0\n",
        b"HELLO\n",
        b"VERSION\t1\t2\nAUTH\tnotanumber\tPLAIN\n",
        b"VERSION\t1\t2\nAUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp\n",
    ],
    ids=["long-line", "long-unterminated", "bad-version", "no-version", "bad-id", "duplicate-id"],
)
def test_protocol_violations_disconnect(server: ServerProcess, payload: bytes) -> None:
    c = server.connect()
    while c.line() != "DONE":
        pass
    c.send(payload)
    assert c.closed(), "server should disconnect"
    ok = server.connect()
    ok.handshake()
    ok.plain(1, "alice", PW)
    assert ok.line() == "OK\t1\tuser=alice"
    assert "client protocol error, disconnecting" in server.log()


def test_hangups_mid_handshake_and_mid_request(server: ServerProcess) -> None:
    for _ in range(20):
        c = server.connect()
        c.close()  # before reading anything
        c = server.connect()
        c.handshake()
        c.plain(1, "alice", PW)
        c.close()  # before the reply
        c = server.connect()
        c.handshake()
        c.send("AUTH\t1\tLOGIN\tservice=smtp\n")
        c.close()  # while the server waits for CONT
    ok = server.connect()
    ok.handshake()
    ok.plain(1, "alice", PW)
    assert ok.line() == "OK\t1\tuser=alice"
    assert "Traceback" not in server.log() and "ERROR" not in server.log()


def test_cont_expiry_and_per_connection_cap(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "limits.toml"
    cfg.write_text(FAST_CONFIG + "[serve]\ncont_timeout = 0.5\nmax_requests_per_connection = 2\n")
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.send("AUTH\t1\tLOGIN\tservice=smtp\trip=127.0.0.2\n")
        assert c.line().startswith("CONT\t1\t")
        assert c.line() == "FAIL\t1\treason=Authentication failed"  # expired
        c.send(
            "AUTH\t2\tLOGIN\tservice=smtp\nAUTH\t3\tLOGIN\tservice=smtp\nAUTH\t4\tLOGIN\tservice=smtp\n"
        )
        assert c.closed()
        assert "more than 2 requests in flight" in srv.log()


def test_database_unreachable_gives_tempfail(tmp_path: Path) -> None:
    with run_server("postgresql+psycopg://nobody@127.0.0.1:9/none") as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", PW)
        assert c.line() == "FAIL\t1\tuser=alice\tcode=temp_fail\ttemp\treason=Authentication failed"
        assert "database unavailable at start" in srv.log()
        assert "auth tempfail: user=alice" in srv.log()


def test_database_broken_while_running_gives_tempfail(
    db: str, config: Path, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    with run_server(db, config=config) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", PW)
        assert c.line() == "OK\t1\tuser=alice"
        eng = sa.create_engine(db)
        with eng.begin() as conn:
            conn.execute(sa.text("ALTER TABLE users RENAME TO users_gone"))
        c.plain(2, "alice", PW)
        assert "code=temp_fail\ttemp" in c.line()
        with eng.begin() as conn:
            conn.execute(sa.text("ALTER TABLE users_gone RENAME TO users"))
        c.plain(3, "alice", PW)
        assert c.line() == "OK\t3\tuser=alice"
        eng.dispose()


def test_uninitialised_database_refuses_to_start(tmp_path: Path) -> None:
    r = run(
        "serve",
        "--listen",
        f"unix:{tmp_path}/s",
        db=f"sqlite:///{tmp_path}/none.db",
        timeout=20,
        process=True,
    )
    assert r.code == 75 and "saslnetauth init" in r.err


def test_bad_listen_address_is_a_clear_error(db: str) -> None:
    for addr, msg in [
        ("tcp:1.2.3.4:5", "invalid listen address"),
        ("inet:127.0.0.1:99999", "invalid port"),
        ("unix:relative/path", "must be absolute"),
    ]:
        r = run("serve", "--listen", addr, db=db, timeout=20, process=True)
        assert r.code == 1 and msg in r.err, (addr, r.err)


def test_failure_delay_holds_only_that_request(db: str, config: Path) -> None:
    with run_server(db, config=config, failure_delay=1.0) as srv:
        c = srv.connect()
        c.handshake()
        t0 = time.monotonic()
        c.plain(1, "alice", "wrong")
        c.plain(2, "alice", PW)
        first = c.line()
        t_ok = time.monotonic() - t0
        second = c.line()
        t_fail = time.monotonic() - t0
        # the OK overtook the delayed FAIL: the delay held only its own request
        assert first == "OK\t2\tuser=alice" and second.startswith("FAIL\t1\t")
        assert t_fail >= 1.0 and t_ok <= t_fail


def test_sigterm_drains_in_flight_requests(db: str, config: Path) -> None:
    with run_server(db, config=config, failure_delay=1.0) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", "wrong")
        time.sleep(0.2)
        srv.signal(signal.SIGTERM)
        assert c.line().startswith("FAIL\t1\t")  # answered before the server exits
        assert srv.proc.wait(20) == 0
        assert "stopping" in srv.log() and "stopped:" in srv.log()


def test_sighup_reloads_configuration(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "reload.toml"
    cfg.write_text(FAST_CONFIG + '[serve]\nfail_reason = "first"\n')
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", "wrong")
        assert c.line().endswith("reason=first")
        cfg.write_text(FAST_CONFIG + '[serve]\nfail_reason = ""\n')
        srv.signal(signal.SIGHUP)
        srv.wait_log("configuration reloaded")
        c.plain(2, "alice", "wrong")
        assert c.line() == "FAIL\t2\tuser=alice"
        cfg.write_text("broken = [")
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload failed, keeping the old configuration")
        c.plain(3, "alice", PW)
        assert c.line() == "OK\t3\tuser=alice"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_password_in_logs(db: str, config: Path, tmp_path: Path, level: str) -> None:
    secret = "Zz9-unique-secret"
    assert run("user", "passwd", "alice", "--password-stdin", db=db, stdin=secret + "\n").code == 0
    cfg = tmp_path / "logging.toml"
    cfg.write_text(config.read_text() + f'[logging]\nlevel = "{level}"\n')
    with run_server(db, config=cfg, args=["--workers", "2"]) as srv:
        c = srv.connect()
        c.handshake()
        c.plain(1, "alice", secret)
        c.plain(2, "alice", secret, rip="203.0.113.5")
        c.plain(3, "alice", secret + "x")
        c.plain(4, "nobody", secret)
        c.plain(6, "alice", secret, authzid="bob")  # a SASL error with the password in it
        c.send(f"AUTH\t7\tPLAIN\tservice=smtp\trip=127.0.0.2\tresp={b64(secret)}\n")
        c.send(f"AUTH\t8\tCRAM-MD5\tservice=smtp\trip=127.0.0.2\tresp={b64(secret)}\n")
        c.send(f"FOO\t{b64(secret)}\n")  # an unknown command: a debug record
        for _ in range(7):
            c.line()
        c.send(f"AUTH\t5\tLOGIN\tservice=smtp\trip=127.0.0.2\tresp={b64('alice')}\n")
        c.line()
        c.send(f"CONT\t5\t{b64(secret)}\n")
        assert c.line() == "OK\t5\tuser=alice"
        text = srv.log()
    if level == "debug":
        assert " DEBUG " in text  # the debug records were written, and checked too
    forms = [
        secret,
        b64(secret),
        b64(f"\0alice\0{secret}"),
        b64(f"\0alice\0{secret}x"),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    ]
    for form in forms:
        assert form not in text, form
    assert text.count("auth ok: user=alice") == 2


def test_two_hundred_clients_twenty_logins_each(db: str, tmp_path: Path) -> None:
    """200 concurrent connections x 20 logins (failure delay 0): every reply correct."""
    cfg = tmp_path / "load.toml"
    cfg.write_text(FAST_CONFIG + "[serve]\nmax_pending = 5000\npenalty_max = 0\n")
    r = run(
        "user",
        "add",
        "bob",
        "--hash",
        "{SSHA512}" + _ssha512("bobpw"),
        "--net",
        "127.0.0.0/24",
        db=db,
    )
    assert r.code == 0, r.err
    with run_server(db, config=cfg) as srv:
        assert srv.unix
        results = asyncio.run(_load(srv.unix, clients=200, logins=20))
    wrong = [r for r in results if r[0] != r[1]]
    assert len(results) == 200 * 20
    assert wrong == []


def _ssha512(pw: str) -> str:
    from saslnetauth.credentials.passwords import PasswordHasher

    return PasswordHasher("SSHA512").hash(pw).split("}", 1)[1]


async def _load(path: str, clients: int, logins: int) -> list[tuple[str, str]]:
    cases = [
        ("bob", "bobpw", "127.0.0.9", "OK"),
        ("bob", "bobpw", "127.0.1.9", "FAIL"),
        ("bob", "nope", "127.0.0.9", "FAIL"),
        ("ghost", "bobpw", "127.0.0.9", "FAIL"),
    ]

    async def one(n: int) -> list[tuple[str, str]]:
        reader, writer = await asyncio.open_unix_connection(path)
        while (await reader.readline()).strip() != b"DONE":
            pass
        writer.write(b"VERSION\t1\t2\nCPID\t1\n")
        out = []
        for i in range(1, logins + 1):
            user, pw, rip, expect = cases[(n + i) % len(cases)]
            resp = b64(f"\0{user}\0{pw}")
            writer.write(f"AUTH\t{i}\tPLAIN\tservice=smtp\trip={rip}\tresp={resp}\n".encode())
            line = (await reader.readline()).decode()
            fields = line.rstrip("\n").split("\t")
            got = fields[0] if fields[1:2] == [str(i)] else f"bad:{line!r}"
            out.append((expect, got))
        writer.close()
        return out

    batches = await asyncio.gather(*(one(n) for n in range(clients)))
    return [r for b in batches for r in b]


@contextlib.contextmanager
def _remote_server(db: str, cfg: Path, host: RemoteHost) -> Iterator[tuple[ServerProcess, int]]:
    """The responder on our end of ``host``'s link, answering only it (``cfg`` has a
    [serve] table last)."""
    port = free_port(host.local)
    cfg.write_text(
        cfg.read_text() + f'allow_remote_listen = true\nallowed_tcp_peers = ["{host.address}"]\n'
    )
    args = ["--listen", f"inet:{host.local}:{port}"]
    with run_server(db, config=cfg, unix=False, args=args) as srv:
        yield srv, port


def _remote_client(host: RemoteHost, port: int) -> AuthClient:
    s = host.connect(port)
    s.settimeout(15)
    return AuthClient(s)


def test_max_connections_idle_timeout_and_max_pending(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "caps.toml"
    cfg.write_text(
        "[passwords]\nargon2_memory_kib = 65536\nargon2_time_cost = 3\n"
        "[serve]\nmax_connections = 3\nidle_timeout = 1.0\nmax_pending = 1\npenalty_max = 0\n"
        "workers = 1\nmax_connections_per_peer = 3\n"
    )
    # from another host: a peer known by its address (the mail servers' users, every
    # local peer the responder serves, have no such bound)
    with remote_host() as host, _remote_server(db, cfg, host) as (srv, port):
        held = [_remote_client(host, port) for _ in range(3)]
        for c in held:
            c.handshake()
        extra = _remote_client(host, port)
        assert extra.closed(timeout=5), "a 4th connection must be refused"
        srv.wait_log(f"connection refused: reason=max_connections peer={host.address}")
        # max_pending = 1: while one slow (default-cost ARGON2ID) verification runs,
        # the next login is answered TEMPFAIL at once, never queued without bound
        c = held[0]
        c.plain(1, "ghost", "x")  # unknown user: a full dummy verification
        c.plain(2, "alice", PW)
        replies = {c.line() for _ in range(2)}
        assert any(r.startswith("FAIL\t2\t") and "temp" in r for r in replies), replies
        assert "reason=overload" in srv.log()
        # idle connections are closed after idle_timeout
        assert held[1].closed(timeout=5)
        srv.wait_log("connection closed: cuid=")
