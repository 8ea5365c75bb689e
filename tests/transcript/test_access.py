"""Who may talk to the responder, and the files it makes (issue 11, items 10, 11, 14, 15):
peer credentials of UNIX clients, allowed TCP peers and listen addresses, the
handshake and idle timeouts, the per-peer share of the connection limit, the
database file's mode and sockets that a planted symbolic link cannot redirect."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.remotehost import RemoteHost, remote_host
from tests.support.serverproc import (
    NOBODY,
    AuthClient,
    as_user,
    free_port,
    results,
    run_server,
)

PW = "acc3ss pw"
FAST = "[passwords]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/access.db"
    r = run("init", db=url)
    assert r.code == 0, r.err
    r = run("user", "add", "alice", "--password-stdin", "--net", "127.0.0.2", db=url, stdin=PW)
    assert r.code == 0, r.err
    return url


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- item 14: the SQLite database is private -----------------------------------------


def test_sqlite_database_is_private_after_init_and_after_the_server_used_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/state/new.db"
    r = run("init", db=url)
    assert r.code == 0, r.err
    path = tmp_path / "state" / "new.db"
    assert _mode(path) == 0o600
    assert f"database file {path} created: mode 0600, owner" in r.out
    r = run("user", "add", "alice", "--password-stdin", "--net", "127.0.0.2", db=url, stdin=PW)
    assert r.code == 0, r.err
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAST)
    with run_server(url, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files[1:]), "WAL mode: the server has -wal and -shm open"
        assert [oct(_mode(f)) for f in files] == [oct(0o600)] * 3
    # an older world-readable database is made private by init, which says so
    path.chmod(0o644)
    r = run("init", db=url)
    assert r.code == 0 and _mode(path) == 0o640
    assert "tightened from 0644 to 0640" in r.out


# -- item 15: sockets and planted symbolic links ------------------------------------


def test_socket_owner_and_mode_never_follow_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who can write to the socket's directory swaps in a symbolic link
    (to a file of root's) right after bind(): the chown/chmod by path used to follow
    it. Now they act in a private directory and the socket is renamed over the link."""
    import socket as socketmod

    from saslnetauth.serve.authsocket import listeners

    victim = tmp_path / "shadow"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = run_dir / "auth-client"
    real_bind = socketmod.socket.bind

    def bind_then_plant(self: socketmod.socket, address: object) -> None:
        real_bind(self, address)  # type: ignore[arg-type]
        if self.family == socketmod.AF_UNIX:
            if target.exists() or target.is_symlink():
                target.unlink()
            target.symlink_to(victim)  # the attacker wins the race

    monkeypatch.setattr(socketmod.socket, "bind", bind_then_plant)
    addr = listeners.parse_listen(f"unix:{target}")
    sock = listeners.bind(addr, mode="0666", owner="65534", group="65534")
    monkeypatch.undo()
    try:
        st = victim.stat()
        assert (oct(stat.S_IMODE(st.st_mode)), st.st_uid) == (oct(0o600), 0)
        assert stat.S_ISSOCK(target.lstat().st_mode), "the socket replaced the planted link"
        assert oct(stat.S_IMODE(target.lstat().st_mode)) == oct(0o666)
        assert target.lstat().st_uid == 65534
        assert sorted(p.name for p in run_dir.iterdir()) == ["auth-client"]
        assert listeners.describe(sock) == f"unix:{target}"
        with socketmod.socket(socketmod.AF_UNIX) as client:
            client.connect(str(target))
    finally:
        sock.close()


def test_a_link_at_the_socket_path_stops_the_start(tmp_path: Path) -> None:
    from saslnetauth.errors import ConfigError
    from saslnetauth.serve.authsocket import listeners

    victim = tmp_path / "file"
    victim.write_text("x")
    link = tmp_path / "auth-client"
    link.symlink_to(victim)
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        listeners.bind(listeners.parse_listen(f"unix:{link}"))
    assert link.is_symlink() and victim.read_text() == "x"


# -- item 10: who may connect ---------------------------------------------------------


def test_unix_peer_of_another_user_is_refused_before_the_handshake(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nsocket_mode = "0666"\n' + FAST)  # the file mode lets anyone in
    with run_server(db, config=cfg) as srv:
        assert srv.unix is not None
        for _ in range(2):
            proc = as_user(NOBODY, srv.unix)
            assert results(proc, 1) == ["closed"]
            assert proc.wait(10) == 0
        log = srv.wait_log("connection refused: reason=peer_not_allowed uid=65534")
        assert log.count("reason=peer_not_allowed") == 1, "logged once per peer"
        c = srv.connect()  # root may
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
    # a listed user may connect
    cfg.write_text('[serve]\nsocket_mode = "0666"\nallowed_users = ["nobody"]\n' + FAST)
    with run_server(db, config=cfg) as srv:
        assert srv.unix is not None
        proc = as_user(NOBODY, srv.unix)
        assert results(proc, 1) == ["handshake"]
        proc.wait(10)
        assert "peer_not_allowed" not in srv.log()
    # ...and so may a member of a listed group (the gid of the connecting process)
    cfg.write_text('[serve]\nsocket_mode = "0666"\nallowed_groups = ["65534"]\n' + FAST)
    with run_server(db, config=cfg) as srv:
        assert srv.unix is not None
        proc = as_user(NOBODY, srv.unix)
        assert results(proc, 1) == ["handshake"]
        proc.wait(10)


def test_unknown_allowed_user_stops_the_start(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nallowed_users = ["no-such-user-xyz"]\n')
    r = run("--config", str(cfg), "serve", "--listen", f"unix:{tmp_path}/s", db=db, process=True)
    assert r.code == 1 and "serve.allowed_users: no such user 'no-such-user-xyz'" in r.err, r
    # the built-in names are skipped where the system lacks them (Debian-exim, say)
    cfg.write_text('[serve]\nallowed_groups = ["Debian-exim", "postfix", "dovecot"]\n')
    from saslnetauth.config import load_config
    from saslnetauth.serve.authsocket.access import PeerPolicy

    PeerPolicy.from_settings(load_config(cfg).serve)


def test_tcp_listeners_stay_on_loopback_unless_allowed(db: str, tmp_path: Path) -> None:
    port = free_port()
    r = run("serve", "--listen", f"inet:0.0.0.0:{port}", db=db, timeout=30, process=True)
    assert r.code == 1 and f"refusing to listen on inet:0.0.0.0:{port}" in r.err, r
    assert "allow_remote_listen" in r.err
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nallow_remote_listen = true\nallowed_tcp_peers = ["127.0.0.2"]\n')
    with run_server(db, config=cfg, unix=False, args=["--listen", f"inet:0.0.0.0:{port}"]) as srv:
        srv.wait_log(f"listening: on=inet:0.0.0.0:{port}")
        # 127.0.0.1 is not among allowed_tcp_peers: closed before the handshake
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(64) == b""
        srv.wait_log("connection refused: reason=peer_not_allowed peer=127.0.0.1")
        with socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
        ) as s:
            assert s.recv(64).startswith(b"VERSION")


def test_tcp_peers_default_to_loopback(db: str) -> None:
    from saslnetauth.config import Config
    from saslnetauth.serve.authsocket.access import Peer, PeerPolicy

    policy = PeerPolicy.from_settings(Config().serve)
    for ok in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert policy.allows(Peer("inet", uid=0, address=ok)), ok
        # the owner of a loopback peer's socket must be known, and allowed
        assert policy.refusal(Peer("inet", address=ok)) == "owner_unknown", ok
        assert policy.refusal(Peer("inet", uid=0, address=ok, error="x")) == "owner_unknown"
        assert policy.refusal(Peer("inet", uid=NOBODY, address=ok)) == "peer_not_allowed"
    for bad in ("192.0.2.1", "10.0.0.1", "::ffff:192.0.2.1", "2001:db8::1", "junk", ""):
        assert not policy.allows(Peer("inet", uid=0, address=bad)), bad
        assert not policy.allows(Peer("inet", address=bad, remote=True)), bad
    assert not policy.allows(Peer("unknown"))
    assert policy.allows(Peer("unix", uid=0, gids=frozenset({0})))
    assert not policy.allows(Peer("unix", uid=NOBODY, gids=frozenset({NOBODY})))


# -- issue 21 item 4: the owner of a TCP peer's socket -------------------------------


def _tcp_config(cfg: Path, host: str, port: int, extra: str = "") -> list[str]:
    peers = '["::1"]' if ":" in host else '["127.0.0.1"]'
    cfg.write_text(f"[serve]\nallowed_tcp_peers = {peers}\n{extra}" + FAST)
    return ["--listen", f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_local_tcp_peer_must_be_an_allowed_user(db: str, tmp_path: Path, host: str) -> None:
    """nobody connected over TCP to loopback and was served (it chose rip= for
    alice's password): only the peer's address was checked. Now the kernel names
    the owner of the client's socket, and it must be an allowed user, as on UNIX."""
    port = free_port(host)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cfg = tmp_path / "c.toml"
    args = _tcp_config(cfg, host, port)
    with run_server(db, config=cfg, unix=False, args=args) as srv:
        for _ in range(2):
            proc = as_user(NOBODY, target)
            assert results(proc, 1) == ["closed"]
            assert proc.wait(10) == 0
        log = srv.wait_log(f"connection refused: reason=peer_not_allowed peer={host} uid=65534")
        assert log.count("reason=peer_not_allowed") == 1, "logged once per peer"
        with socket.create_connection((host, port), timeout=10) as s:  # root may
            c = AuthClient(s)
            c.handshake()
            assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
    # a user listed in allowed_users may, and so may a member (by its account) of
    # an allowed group: nobody's primary group, although setpriv cleared its groups
    for extra in ('allowed_users = ["nobody"]\n', 'allowed_groups = ["65534"]\n'):
        args = _tcp_config(cfg, host, port, extra)
        with run_server(db, config=cfg, unix=False, args=args) as srv:
            proc = as_user(NOBODY, target)
            assert results(proc, 1) == ["handshake"], extra
            proc.wait(10)
            assert "connection refused" not in srv.log()


# -- item 11: silent connections --------------------------------------------------------


def _remote_config(cfg: Path, host: RemoteHost, port: int, serve: str) -> list[str]:
    """The responder listening on our end of ``host``'s link, answering only it."""
    cfg.write_text(
        f'[serve]\nallow_remote_listen = true\nallowed_tcp_peers = ["{host.address}"]\n'
        + serve
        + FAST
    )
    return ["--listen", f"inet:{host.local}:{port}"]


def test_silent_connections_no_longer_lock_a_real_client_out(db: str, tmp_path: Path) -> None:
    """Five connections that never speak once kept every client out (max_connections
    = 5, no handshake timeout). Now a peer that is not a mail server's user (here
    another host, known by its address alone) gets at most half of the connections,
    and silent ones are closed after handshake_timeout."""
    cfg = tmp_path / "c.toml"
    with remote_host() as host:
        port = free_port(host.local)
        args = _remote_config(cfg, host, port, "max_connections = 5\nhandshake_timeout = 2.0\n")
        with run_server(db, config=cfg, args=args) as srv:
            squatter = [AuthClient(host.connect(port)) for _ in range(5)]
            got = [_greeted(c) for c in squatter]
            assert got.count(True) == 2 and got.count(False) == 3, got
            srv.wait_log(f"connection refused: reason=max_connections_per_peer peer={host.address}")
            # the real client (another peer) still gets in while the squatter holds on
            c = srv.connect()
            c.handshake()
            assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
            # and the squatter's silent connections are closed by the handshake timeout
            log = srv.wait_log("reason=handshake_timeout", timeout=10)
            assert log.count("connection closed: cuid=") >= 1
            held = [sq for sq, greeted in zip(squatter, got, strict=True) if greeted]
            assert all(sq.closed(timeout=10) for sq in held)
            c.plain(2, "alice", PW, rip="127.0.0.2")
            assert c.line() == "OK\t2\tuser=alice", "a client that sent VERSION is not closed"
            for sq in squatter:
                sq.close()


# -- issue 21, item 6: the mail servers' users have no per-peer share -----------------


def test_an_allowed_peer_gets_more_connections_than_the_share(db: str, tmp_path: Path) -> None:
    """All of Postfix's smtpd processes are one peer (user postfix). With
    max_connections = 6 its share used to be 3, and the 4th smtpd was refused
    (reason=max_connections_per_peer uid=...). Now an allowed user is bounded only
    by the file descriptors: ten connections of root, the last one still served,
    while another host (an address, not a mail server's user) keeps its share."""
    cfg = tmp_path / "c.toml"
    with remote_host() as host:
        port = free_port(host.local)
        args = _remote_config(cfg, host, port, "max_connections = 6\n")
        with run_server(db, config=cfg, args=args) as srv:
            assert srv.unix is not None
            held = []
            for _ in range(10):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(15)
                s.connect(srv.unix)
                held.append(AuthClient(s))
            for c in held:
                assert c.handshake()[0].startswith("VERSION\t1\t"), "every one is greeted"
            last = held[-1]
            assert last.login_plain("alice", PW) == "OK\t1\tuser=alice"
            # the share still applies to another host: 3 of 4 silent connections
            tcp = []
            for _ in range(4):
                tcp.append(AuthClient(host.connect(port)))
                tcp[-1].sock.settimeout(15)
            assert [_greeted(c) for c in tcp] == [True, True, True, False]
            srv.wait_log(f"connection refused: reason=max_connections_per_peer peer={host.address}")
            assert "reason=max_connections_per_peer uid=0" not in srv.log()
            for c in [*held, *tcp]:
                c.close()


def _greeted(c: AuthClient) -> bool:
    try:
        return c.line().startswith("VERSION")
    except (EOFError, ConnectionResetError):
        return False


def test_allowed_peers_are_bounded_by_the_descriptor_limit(db: str, tmp_path: Path) -> None:
    """Under RLIMIT_NOFILE 200 the start leaves 200 - 64 (reserve) - 8 (one worker)
    - 10 (max_connections) = 118 connections to the mail servers' users: the 119th
    is refused (reason=descriptor_limit), never a descriptor the server itself
    needs, and a login on a held connection still works."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nmax_connections = 10\nworkers = 1\n" + FAST)
    with run_server(db, config=cfg, nofile=200) as srv:
        assert srv.unix is not None
        srv.wait_log("file descriptors: limit=200 mail_server_connections=118")
        held = []
        for _ in range(118):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            s.connect(srv.unix)
            held.append(AuthClient(s))
            held[-1].handshake()
        extra = srv.connect()
        assert extra.closed(timeout=5), "the 119th connection must be refused"
        srv.wait_log("connection refused: reason=descriptor_limit uid=0")
        assert held[0].login_plain("alice", PW) == "OK\t1\tuser=alice"
        assert "Too many open files" not in srv.log()
        for c in held:
            c.close()


def test_a_reload_that_leaves_too_few_descriptors_is_refused(db: str, tmp_path: Path) -> None:
    """RLIMIT_NOFILE 300: max_connections = 10 leaves 218 for the mail servers; a
    reload to 200 would leave 28, so it is refused and the old bound stays."""
    import signal

    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nmax_connections = 10\nworkers = 1\n" + FAST)
    with run_server(db, config=cfg, nofile=300) as srv:
        srv.wait_log("mail_server_connections=218")
        cfg.write_text("[serve]\nmax_connections = 200\nworkers = 1\n" + FAST)
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload failed, keeping the old configuration")
        assert "which leaves 28 for the mail servers' connections, fewer than 100" in srv.log()
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"


def test_too_few_descriptors_stop_the_start(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nworkers = 1\n" + FAST)
    with (
        pytest.raises(AssertionError, match="too few file descriptors: the limit"),
        run_server(db, config=cfg, nofile=512),
    ):
        pass


def test_handshake_timeout_closes_a_silent_connection(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nhandshake_timeout = 1.0\n" + FAST)
    with run_server(db, config=cfg) as srv:
        silent = srv.connect()
        assert silent.line() == "VERSION\t1\t2"
        assert silent.closed(timeout=10), "no VERSION within handshake_timeout: closed"
        srv.wait_log("connection closed: cuid=1 reason=handshake_timeout")
        talker = srv.connect()
        talker.handshake()
        assert not talker.closed(timeout=2.5), "VERSION sent: the handshake timeout is over"
        assert talker.login_plain("alice", PW) == "OK\t1\tuser=alice"


def test_default_idle_timeout_is_not_zero() -> None:
    from saslnetauth.config import Config

    serve = Config().serve
    assert serve.idle_timeout >= 400, "Postfix keeps smtpd's connection across sessions"
    assert 0 < serve.handshake_timeout <= 10


def test_idle_timeout_counts_from_the_last_reply(db: str, tmp_path: Path) -> None:
    """The idle timer once started only when the server began waiting with no request
    in flight: a connection whose last request was answered stayed open forever."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nidle_timeout = 1.0\n" + FAST)
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
        assert c.closed(timeout=6), "idle after its reply: closed after idle_timeout"
        srv.wait_log("connection closed: cuid=1 reason=idle")


def test_reload_with_an_unknown_allowed_user_keeps_the_old_rules(db: str, tmp_path: Path) -> None:
    import signal

    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nsocket_mode = "0666"\n' + FAST)
    with run_server(db, config=cfg) as srv:
        assert srv.unix is not None
        cfg.write_text('[serve]\nsocket_mode = "0666"\nallowed_users = ["no-such-xyz"]\n' + FAST)
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload failed, keeping the old configuration")
        assert "no such user 'no-such-xyz'" in srv.log()
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW) == "OK\t1\tuser=alice"
        cfg.write_text('[serve]\nsocket_mode = "0666"\nallowed_users = ["nobody"]\n' + FAST)
        srv.signal(signal.SIGHUP)
        srv.wait_log("configuration reloaded")
        proc = as_user(NOBODY, srv.unix)
        assert results(proc, 1) == ["handshake"], "the new rules apply to new connections"
        proc.wait(10)


def test_server_log_never_shows_a_database_password(tmp_path: Path) -> None:
    secret = "Srv-DbPassw0rd"
    url = f"postgresql+psycopg://saslnetauth:{secret}@127.0.0.1:9/none"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'database_url = "{url}"\n' + FAST)
    cfg.chmod(0o600)
    with run_server(url, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        assert c.login_plain("alice", PW).startswith("FAIL\t1\t")  # database down: temp
        srv.wait_log("auth tempfail")
        log = srv.log()
    assert secret not in log, log
