"""Ending live sessions on revoke (issue 25, item 4) with a real Dovecot 2.3.

IMAP sessions logged in through saslnetauth-checkpassword (the fast path: the
server is running) sit in IDLE; the revocation must end them within seconds:
``user app-password del`` and ``user disable`` (the command line runs the
``[revoke] command``), and a grant's expiry (the server notices it and runs the
command). The command is ``doveadm kick`` aimed at this private Dovecot (``-c``
its configuration, so its anvil socket).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.peers.test_checkpassword import FAST, render_example
from tests.support.clitools import run
from tests.support.dovecot import DovecotInstance, doveadm_binary
from tests.support.imapidle import ImapIdle
from tests.support.net import peer_tmpdir, require_source_addresses
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "kick me pw"
#: Seconds an IDLE session may take to see its connection closed (without the kick
#: Dovecot keeps it for 30 minutes).
CLOSE_WAIT = 20.0
HOME = "127.0.0.2"
TRIP = "127.0.0.3"


class World:
    def __init__(self, db: str, cfg: Path, server: ServerProcess, dovecot: DovecotInstance):
        self.db, self.cfg, self.server, self.dovecot = db, cfg, server, dovecot

    def cli(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        r = run(*args, db=self.db, stdin=stdin, env={"SASLNETAUTH_CONFIG": str(self.cfg)})
        return r.code, r.out, r.err

    def add_user(self, name: str, *nets: str) -> None:
        args = [a for n in nets for a in ("--net", n)]
        code, _, err = self.cli("user", "add", name, "--password-stdin", *args, stdin=PW + "\n")
        assert code == 0, err

    def idle(self, source: str, user: str, password: str = PW) -> ImapIdle:
        return self.dovecot.imap_idle(source, user, password)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_source_addresses(HOME, TRIP)
    with peer_tmpdir("sna-kick-") as tmp:
        db = f"sqlite:///{tmp}/kick.db"
        assert run("init", db=db).code == 0
        sock = tmp / "auth-client"
        cfg = tmp / "saslnetauth.toml"
        passdb, _, userdb = render_example(str(sock), cfg, tmp / "home").partition("userdb {")
        dovecot = DovecotInstance(
            tmp / "dovecot", passdb=passdb, userdb="userdb {" + userdb, protocols=("imap",)
        )
        command = [doveadm_binary(), "-c", str(dovecot.config_file), "kick", "{user}", "{network}"]
        cfg.write_text(
            f'database_url = "{db}"\n{FAST}'
            f"[revoke]\ncommand = {json.dumps(command)}\ncheck_seconds = 0.5\n"
        )
        cfg.chmod(0o644)
        with run_server(db, config=cfg, workdir=tmp) as server, dovecot:
            assert server.unix == str(sock)
            yield World(db, cfg, server, dovecot)


def test_app_password_del_ends_its_session(world: World) -> None:
    world.add_user("alice", HOME)
    code, out, err = world.cli(
        "user", "app-password", "add", "alice", "--label", "phone", "--net", "any", "--json"
    )
    assert code == 0, err
    token = json.loads(out)["password"]
    phone = world.idle(TRIP, "alice", token)
    main = world.idle(HOME, "alice")
    try:
        before = world.server.log().count("auth ")
        code, _, err = world.cli("user", "app-password", "del", "alice", "phone")
        assert code == 0, err
        assert "sessions of alice (phone) ended" in err, err
        assert phone.wait_closed(CLOSE_WAIT), phone.lines
        # Dovecot 2.3 cannot tell which credential opened a session: doveadm kick
        # ends the user's (docs/revoke.md); the main password logs in again, the phone not
        assert main.wait_closed(CLOSE_WAIT), main.lines
        assert world.dovecot.imap_login(HOME, "alice", PW) is True
        assert world.dovecot.imap_login(TRIP, "alice", token) is False
        # the logins went through the running server (fast path)
        assert world.server.log().count("auth ") >= before + 2
    finally:
        phone.close()
        main.close()


def test_user_disable_ends_the_session(world: World) -> None:
    world.add_user("bob", HOME)
    session = world.idle(HOME, "bob")
    try:
        code, _, err = world.cli("user", "disable", "bob")
        assert code == 0, err
        assert "sessions of bob ended" in err, err
        assert session.wait_closed(CLOSE_WAIT), session.lines
        assert world.dovecot.imap_login(HOME, "bob", PW) is False
    finally:
        session.close()


def test_grant_expiry_ends_the_sessions_from_there(world: World) -> None:
    """The server notices the expiry and kicks carol's sessions from the expired
    network only (``doveadm kick carol 127.0.0.3``): the one from home stays."""
    world.add_user("carol", HOME)
    code, _, err = world.cli("user", "net", "add", "carol", TRIP, "--expires", "1h")
    assert code == 0, err
    trip = world.idle(TRIP, "carol")
    home = world.idle(HOME, "carol")
    try:
        # far enough ahead for a slow CLI on a loaded machine (--until refuses the past)
        soon = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
        code, out, err = world.cli("user", "net", "add", "carol", TRIP, "--until", soon)
        assert code == 0 and "renewed" in out, (out, err)
        assert trip.wait_closed(8 + CLOSE_WAIT), trip.lines
        log = world.server.wait_log("revoke command done: event=network_expired user=carol")
        assert f"network={TRIP}" in log
        assert home.done() is True, home.lines  # the home session still answers
        assert world.dovecot.imap_login(TRIP, "carol", PW) is False
        assert world.dovecot.imap_login(HOME, "carol", PW) is True
    finally:
        trip.close()
        home.close()


def test_user_kick_by_hand(world: World) -> None:
    world.add_user("dave", HOME)
    session = world.idle(HOME, "dave")
    try:
        code, _, err = world.cli("user", "kick", "dave")
        assert code == 0, err
        assert "sessions of dave ended" in err, err
        assert session.wait_closed(CLOSE_WAIT), session.lines
        assert world.dovecot.imap_login(HOME, "dave", PW) is True  # kicked, not revoked
        # nobody left: doveadm kick exits 68 ("no users kicked"), [revoke] ok_status
        code, _, err = world.cli("user", "kick", "dave")
        assert code == 0, err
        assert "no live sessions of dave" in err and "exit 68" in err, err
        code, _, err = world.cli("user", "disable", "dave")
        assert code == 0 and "warning" not in err, err
    finally:
        session.close()
