"""Exim's dovecot authenticator in host-checking mode (``exim4 -bh IP``), no daemon.

``exim4 -C CONF -bh 127.0.0.3`` runs a whole SMTP session on stdin/stdout as
if from that client address, authenticators included: the dovecot driver
really connects to its ``server_socket`` (docs/protocols.md section 4). The config
is the shipped ``dovecot-examples/exim/saslnetauth-authenticators.conf`` with
only ``server_socket`` replaced, inside a minimal main section.

Peer facts (Exim 4.96 and 4.98, verified here):

- Exim refuses ``-C`` files that are not root-owned or are group/world
  writable ("has the wrong owner, group, or mode"): the harness writes 0644.
- In ``-bh`` mode Exim drops root and connects to the socket as its exim
  user (Debian-exim), so the auth socket must be connectable by that user;
  otherwise AUTH answers ``435 Unable to authenticate at present``.
- ``-bh`` takes IPv6 as ``::1`` or ``[::1]`` and sends the auth server the
  fully expanded form, ``rip=0000:0000:0000:0000:0000:0000:0000:0001``
  (``::ffff:127.0.0.2`` becomes ``...:ffff:7f00:0002``), and ``lip=NULL``
  unless a local address is given (``-oMi``).

``root`` picks the Exim: this machine's (Debian 12, 4.96) or the Debian 13
chroot's (4.98, unpacked at ``/opt/exim`` in there; :mod:`tests.support.roots`).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from tests.support.net import PeerError, make_peer_dir, require_root
from tests.support.postfix import LOCAL_DOMAIN, OUTSIDE_DOMAIN, OUTSIDE_RECIPIENT
from tests.support.roots import HOST, Root

REPO = Path(__file__).resolve().parents[2]
SHIPPED_AUTHENTICATORS = REPO / "dovecot-examples" / "exim" / "saslnetauth-authenticators.conf"
SHIPPED_SOCKET = "/run/saslnetauth/auth-client"
EXIM_USER = "Debian-exim"

_SOCKET_LINE = re.compile(r"^(\s*server_socket\s*=\s*)(\S.*)$", re.M)


def render_authenticators(shipped: str, socket_path: str | Path) -> str:
    """The shipped authenticators with every ``server_socket`` pointed at ``socket_path``."""
    sockets = _SOCKET_LINE.findall(shipped)
    if not sockets or any(value.strip() != SHIPPED_SOCKET for _, value in sockets):
        raise PeerError(f"shipped authenticators no longer use server_socket = {SHIPPED_SOCKET}")
    return _SOCKET_LINE.sub(lambda m: f"{m.group(1)}{socket_path}", shipped)


class EximReply(NamedTuple):
    code: int
    text: str
    """All lines of the reply, without the codes."""


def parse_replies(stdout: str) -> list[EximReply]:
    """SMTP replies in an ``-bh`` transcript (the ``****`` banner lines are skipped)."""
    replies: list[EximReply] = []
    lines: list[str] = []
    for line in stdout.splitlines():
        m = re.match(r"^(\d{3})([ -])(.*)$", line)
        if not m:
            continue
        lines.append(m.group(3))
        if m.group(2) == " ":
            replies.append(EximReply(int(m.group(1)), "\n".join(lines)))
            lines = []
    return replies


class EximSession(NamedTuple):
    replies: list[EximReply]
    transcript: str
    """stdout then stderr (Exim's ``LOG:`` lines and ``>>>`` host-check notes)."""


class EximHostCheck:
    """Exim configured with the shipped authenticators pointing at ``socket_path``."""

    def __init__(self, tmpdir: Path, socket_path: str | Path, root: Root = HOST) -> None:
        """``socket_path``: the auth socket as seen from ``root``."""
        require_root()
        self.system = root
        self.exim = root.require_binary("exim4", root.exim_dir / "usr" / "sbin")
        uid, gid = root.user_ids(EXIM_USER)
        self.root = make_peer_dir(Path(tmpdir))
        self.socket_path = Path(socket_path)
        self.spool_dir = self.root / "spool"
        self.log_dir = self.root / "log"
        self.config_file = self.root / "exim.conf"
        for d in (self.spool_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
        self.config_file.write_text(self.config_text())
        self.config_file.chmod(0o644)

    def config_text(self) -> str:
        auths = render_authenticators(SHIPPED_AUTHENTICATORS.read_text(), self.socket_path)
        return f"""\
# private Exim host-check configuration (tests/support/exim.py)
exim_user = {EXIM_USER}
exim_group = {EXIM_USER}
primary_hostname = mx.{LOCAL_DOMAIN}
qualify_domain = {LOCAL_DOMAIN}
domainlist local_domains = {LOCAL_DOMAIN}
spool_directory = {self.system.inside(self.spool_dir)}
log_file_path = {self.system.inside(self.log_dir)}/%slog
host_lookup =
rfc1413_hosts =
auth_advertise_hosts = *
tls_advertise_hosts =
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept authenticated = *
  accept domains = +local_domains
  deny message = relay not permitted

begin authenticators

{auths}"""

    def version(self) -> str:
        """The Exim release that runs (from ``exim4 -bV``: "Exim version 4.98.2 ...")."""
        res = subprocess.run(
            self.system.cmd(self.exim, "-C", self.system.inside(self.config_file), "-bV"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        m = re.search(r"Exim version (\S+)", res.stdout)
        if not m:
            raise PeerError(f"exim4 -bV printed no version:\n{res.stdout}{res.stderr}")
        return m.group(1)

    def session(
        self, client_ip: str, commands: Sequence[str], local_ip: str | None = None
    ) -> EximSession:
        """Feed ``commands`` (one per line) to ``exim4 -bh client_ip``."""
        cmd = self.system.cmd(self.exim, "-C", self.system.inside(self.config_file))
        if local_ip is not None:
            cmd += ["-oMi", local_ip]
        cmd += ["-bh", client_ip]
        stdin = "".join(f"{c}\r\n" for c in commands)
        res = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
        transcript = res.stdout + res.stderr
        if "has the wrong owner" in transcript or "configuration error" in transcript:
            raise PeerError(f"exim refused its configuration:\n{transcript}")
        return EximSession(parse_replies(res.stdout), transcript)

    def auth(
        self,
        client_ip: str,
        user: str,
        password: str,
        mech: str = "PLAIN",
        local_ip: str | None = None,
    ) -> tuple[int, str]:
        """EHLO + AUTH from ``client_ip``; returns (AUTH reply code, full transcript)."""
        code, _, session = self._auth_session(client_ip, user, password, mech, (), local_ip)
        return code, session.transcript

    def relay(
        self, client_ip: str, user: str, password: str, mech: str = "PLAIN"
    ) -> tuple[int, int, str]:
        """AUTH, then MAIL/RCPT to an outside domain: (AUTH code, RCPT code, transcript)."""
        extra = (f"MAIL FROM:<sender@{OUTSIDE_DOMAIN}>", f"RCPT TO:<{OUTSIDE_RECIPIENT}>")
        code, after, session = self._auth_session(client_ip, user, password, mech, extra, None)
        if len(after) < 2:
            raise PeerError(f"no RCPT reply in exim transcript:\n{session.transcript}")
        return code, after[1].code, session.transcript

    def _auth_session(
        self,
        client_ip: str,
        user: str,
        password: str,
        mech: str,
        more: Sequence[str],
        local_ip: str | None,
    ) -> tuple[int, list[EximReply], EximSession]:
        mech = mech.upper()
        if mech == "PLAIN":
            steps = ["AUTH PLAIN " + _b64("\0" + user + "\0" + password)]
        elif mech == "LOGIN":
            steps = ["AUTH LOGIN", _b64(user), _b64(password)]
        else:
            raise ValueError(f"unsupported mechanism {mech}")
        session = self.session(client_ip, ["EHLO client.test", *steps, *more, "QUIT"], local_ip)
        # replies: greeting, EHLO, 334 challenges..., AUTH verdict, then `more`, QUIT
        replies = session.replies[2:]
        while replies and replies[0].code == 334:
            replies = replies[1:]
        if not replies or len(session.replies) < 2 or session.replies[1].code != 250:
            raise PeerError(f"no AUTH reply in exim transcript:\n{session.transcript}")
        return replies[0].code, replies[1:], session


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
