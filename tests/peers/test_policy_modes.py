"""What clients see from the policy endpoint in each mode: the password oracle, measured.

Real Dovecot 2.3 (host) and 2.4.1 (chroot), IMAP through imap-login and
Postfix through Dovecot's auth socket, from an address outside alice's
networks, once with her right password and once with a wrong one:

- ``before_auth`` (the shipped mode, check_before_auth = yes): both get the
  same answer, so the refusal reveals nothing about the password; no alert
  (the password was never checked).
- ``after_auth`` (check_before_auth = no, check_after_auth = yes): the right
  password gets the policy refusal (IMAP ``NO [ALERT] <msg>``), a wrong one
  Dovecot's own failure: the client learns the password was right. In
  exchange saslnetauth knows it too, and raises the stolen-password alert.
  POP3 (Dovecot 2.4; the host's 2.3 has no pop3) prints the default msg
  exactly as Dovecot prints a wrong password, in both modes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clitools import run
from tests.support.dovecot import Dovecot24Instance, DovecotInstance, passwd_line
from tests.support.net import PeerError, peer_tmpdir, require_source_addresses, wait_for
from tests.support.policy import POLICY_KEYS, SNIPPETS, policy_snippet, write_secret_config
from tests.support.postfix import PostfixInstance
from tests.support.serverproc import ServerProcess, free_port, run_server

pytestmark = pytest.mark.peer

PW = "modes pw"
OUTSIDE = "127.0.0.3"


class Peers:
    dovecot: DovecotInstance
    postfix: PostfixInstance
    server: ServerProcess
    alerts: Path


@pytest.fixture(
    scope="module",
    params=[
        ("2.3", "before_auth"),
        ("2.3", "after_auth"),
        ("2.4", "before_auth"),
        ("2.4", "after_auth"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def peers(request: pytest.FixtureRequest) -> Iterator[Peers]:
    version, mode = request.param
    require_source_addresses("127.0.0.2", OUTSIDE)
    with peer_tmpdir("sna-mode-") as tmp:
        root = Dovecot24Instance.tmpdir("sna-mode-") if version == "2.4" else tmp
        try:
            yield from _peers(version, mode, tmp, root)
        finally:
            if root != tmp:
                shutil.rmtree(root, ignore_errors=True)


def _peers(version: str, mode: str, tmp: Path, root: Path) -> Iterator[Peers]:
    p = Peers()
    db = f"sqlite:///{tmp}/users.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}x", "--net", "127.0.0.2", db=db).code == 0
    port = free_port()
    p.alerts = tmp / "alerts"
    config = write_secret_config(
        tmp / "serve.toml",
        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\nmode = "{mode}"\n{POLICY_KEYS}'
        f'[serve]\nalert_command = ["/bin/sh", "-c", '
        f'"echo $SASLNETAUTH_USER $SASLNETAUTH_RIP >> {p.alerts}"]\n',
    )
    snippet = policy_snippet(version, port)  # the shipped snippet, with the secret
    if mode == "after_auth":
        for setting, value in (("check_before_auth", "no"), ("check_after_auth", "yes")):
            old = f"auth_policy_{setting} = {'yes' if value == 'no' else 'no'}"
            assert old in snippet
            snippet = snippet.replace(old, f"auth_policy_{setting} = {value}")
    kind = Dovecot24Instance if version == "2.4" else DovecotInstance
    p.dovecot = kind(
        root / "dovecot",
        passwd=[passwd_line("alice", PW)],
        # POP3 where Dovecot's pop3 is installed (the chroot; not the host's 2.3)
        protocols=("imap", "pop3") if version == "2.4" else ("imap",),
        auth_inet=True,
        extra_config=snippet,
    )
    with run_server(db, config=config) as p.server, p.dovecot:
        assert p.dovecot.auth_inet is not None
        with PostfixInstance(tmp / "postfix", p.dovecot.auth_inet) as p.postfix:
            yield p


def imap_answer(d: DovecotInstance, source: str, password: str) -> str:
    try:
        return "OK" if d.imap_login(source, "alice", password) else "AUTHENTICATIONFAILED"
    except PeerError as exc:
        return str(exc).split("AUTHENTICATIONFAILED: ", 1)[-1].split(" [vm:")[0]


def test_what_clients_see(peers: Peers, request: pytest.FixtureRequest) -> None:
    version, mode = request.node.callspec.params["peers"]
    d, pf = peers.dovecot, peers.postfix
    assert imap_answer(d, "127.0.0.2", PW) == "OK"
    assert pf.login("127.0.0.2", "alice", PW)[0] == 235
    imap_right, imap_wrong = imap_answer(d, OUTSIDE, PW), imap_answer(d, OUTSIDE, "wrong")
    smtp_right, smtp_wrong = pf.login(OUTSIDE, "alice", PW), pf.login(OUTSIDE, "alice", "wrong")
    assert "OK" not in (imap_right, imap_wrong)
    assert smtp_right[0] == smtp_wrong[0] == 535
    pop3 = ("", "")
    if d.pop3_port:
        assert d.pop3_login("127.0.0.2", "alice", PW).startswith("+OK")
        pop3 = (d.pop3_login(OUTSIDE, "alice", PW), d.pop3_login(OUTSIDE, "alice", "wrong"))
        # POP3 shows the msg as Dovecot shows a wrong password, in both modes
        assert pop3[0] == pop3[1] == "-ERR [AUTH] Authentication failed.", pop3
    print(
        f"\n{version} {mode}: IMAP {imap_right!r} / {imap_wrong!r}; SMTP {smtp_right} / {smtp_wrong}"
    )
    assert version in SNIPPETS
    if mode == "before_auth":
        assert imap_right == imap_wrong and smtp_right == smtp_wrong  # no oracle
        assert not peers.alerts.exists()
    else:
        assert imap_right != imap_wrong  # the oracle: the right password is visible
        assert "[ALERT] Authentication failed." in imap_right
        peers.server.wait_log("credentials_valid=yes")
        lines = wait_for(
            lambda: peers.alerts.exists() and peers.alerts.read_text().splitlines(),
            what="the alert command's output",
        )
        assert lines[0] == f"alice {OUTSIDE}"  # the alert command ran, for the right login
