"""A private Postfix instance using the shipped main.cf, and SMTP clients for it.

Postfix is a real Dovecot-protocol client (``smtpd_sasl_type = dovecot``,
``src/xsasl/xsasl_dovecot_server.c``). The instance renders
``dovecot-examples/postfix/main.cf`` unchanged except for ``smtpd_sasl_path``
and the settings that make it a private, non-delivering test instance
(docs/protocols.md section 4). Loopback clients are NOT in ``mynetworks``, so only
SASL decides about relaying.

``root`` picks the Postfix: this machine's (Debian 12, 3.7) or the Debian 13
chroot's (3.10, :mod:`tests.support.roots`); the instance directory must then
lie inside the chroot, and Postfix is given every path as seen from inside.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from tests.support.net import (
    PeerError,
    free_port,
    ipv6_loopback_usable,
    loopback_for,
    make_peer_dir,
    read_pid,
    reap_session,
    require_root,
    run_daemon_command,
    tail,
    wait_file_match,
    wait_port,
)
from tests.support.peers import Daemon, missing
from tests.support.roots import HOST, Root

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MAIN_CF = REPO / "dovecot-examples" / "postfix" / "main.cf"
SHIPPED_MASTER_CF = REPO / "dovecot-examples" / "postfix" / "master.cf"
SHIPPED_SASL_PATH = "private/saslnetauth"

LOCAL_DOMAIN = "saslnetauth.test"
OUTSIDE_DOMAIN = "outside.example"
LOCAL_RECIPIENT = f"postmaster@{LOCAL_DOMAIN}"
OUTSIDE_RECIPIENT = f"x@{OUTSIDE_DOMAIN}"
UNTRUSTED_MYNETWORKS = "192.0.2.1/32"
"""mynetworks: one TEST-NET address, so that no loopback client is trusted."""
CLIENT_HELO = "client.saslnetauth.test"
SMTP_TIMEOUT = 30.0

_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def set_main_cf_param(text: str, name: str, value: str) -> tuple[str, bool]:
    """Replace every active ``name = ...`` (with its continuation lines) by one line.

    Returns the new text and whether the parameter was present. Comment lines
    (``#smtpd_sasl_path = ...``) are left alone.
    """
    head = re.compile(rf"{re.escape(name)}\s*=")
    out: list[str] = []
    found = skipping = False
    for line in text.splitlines():
        if skipping and line[:1] in (" ", "\t") and not line.lstrip().startswith("#"):
            continue  # continuation of the parameter being replaced
        skipping = False
        if head.match(line):
            skipping = True
            if not found:
                out.append(f"{name} = {value}")
                found = True
            continue
        out.append(line)
    return "\n".join(out) + "\n", found


def render_main_cf(shipped: str, overrides: Mapping[str, str]) -> str:
    """The shipped main.cf with ``overrides`` set in place or appended in a marked block."""
    text = shipped
    appended: list[str] = []
    for name, value in overrides.items():
        text, found = set_main_cf_param(text, name, value)
        if not found:
            appended.append(f"{name} = {value}")
    if appended:
        text += "\n# --- private test instance (tests/support/postfix.py) ---\n"
        text += "\n".join(appended) + "\n"
    return text


def sending_restrictions(policy: str | Path) -> dict[str, str]:
    """The shipped main.cf's commented sending-limit lines (``check_policy_service``,
    docs/sending.md), asking the policy socket ``policy`` (a path as Postfix sees it)."""
    found = {}
    for line in SHIPPED_MAIN_CF.read_text().splitlines():
        m = re.fullmatch(r"#(smtpd_\w+_restrictions) = (check_policy_service) unix:(\S+)", line)
        if m:
            found[m.group(1)] = f"{m.group(2)} unix:{policy}"
    if set(found) != {"smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions"}:
        raise PeerError(f"the shipped main.cf's sending lines are not as expected: {found}")
    return found


class PostfixInstance(Daemon):
    """A private Postfix (config, queue, data dir and maillog under ``tmpdir``).

    ``sasl_path``: an absolute UNIX socket path, ``inet:HOST:PORT``, or a path
    relative to the queue directory (the shipped ``private/saslnetauth``; see
    :meth:`queue_socket_path`). ``None`` keeps the shipped value. smtpd runs
    unchrooted on ``port`` (default: a free one) on 127.0.0.1 and, when the
    machine has it, ::1; or on ``listen`` alone (one IPv4 address: a host of its
    own in a network namespace, ``root=`` a :class:`tests.support.mxhosts.NetnsRoot`).
    Use as a context manager or call start()/stop().
    """

    def __init__(
        self,
        tmpdir: Path,
        sasl_path: str | Path | None = None,
        port: int | None = None,
        *,
        main_cf: Mapping[str, str] | None = None,
        extra_master_cf: str = "",
        shipped_main_cf: Path = SHIPPED_MAIN_CF,
        root: Root = HOST,
        listen: str | None = None,
    ) -> None:
        require_root()
        self.system = root
        self.postfix = root.require_binary("postfix")
        self.postconf_bin = root.require_binary("postconf")
        self.root = make_peer_dir(Path(tmpdir))
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.maillog_path = self.root / "maillog"
        self.port = port or free_port()
        self.ipv6 = listen is None and ipv6_loopback_usable()
        self.host = listen or "127.0.0.1"
        self.sasl_path = str(sasl_path) if sasl_path is not None else None
        self.extra_main_cf = dict(main_cf or {})
        self.extra_master_cf = extra_master_cf
        self.shipped_main_cf = shipped_main_cf
        self._prepared = False
        self._started = False
        self._master_pid: int | None = None

    # -- configuration -------------------------------------------------
    def overrides(self) -> dict[str, str]:
        """main.cf settings the harness sets on top of the shipped file."""
        inside = self.system.inside
        settings = {
            "compatibility_level": "3.6",
            "config_directory": inside(self.config_dir),
            "queue_directory": inside(self.queue_dir),
            "data_directory": inside(self.data_dir),
            "maillog_file": inside(self.maillog_path),
            "maillog_file_prefixes": inside(self.root),
            "inet_interfaces": "127.0.0.1, [::1]" if self.ipv6 else self.host,
            "inet_protocols": "all" if self.ipv6 else "ipv4",
            "myhostname": f"mx.{LOCAL_DOMAIN}",
            "mydomain": LOCAL_DOMAIN,
            "myorigin": "$mydomain",
            "mydestination": f"$myhostname, localhost, {LOCAL_DOMAIN}",
            "mynetworks": UNTRUSTED_MYNETWORKS,
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # accept, queue, then throw away: nothing leaves the machine
            "local_transport": "discard:",
            "default_transport": "discard:",
            "relay_transport": "discard:",
            "smtpd_peername_lookup": "no",
            # smtpd exits when it cannot reach the auth server (before its 220
            # greeting); the master then throttles smtpd for 60 s by default
            "service_throttle_time": "1s",
            "smtpd_tls_security_level": "none",
            "smtpd_tls_auth_only": "no",
            "biff": "no",
        }
        if self.sasl_path is not None:
            settings["smtpd_sasl_path"] = self.sasl_path
        settings.update(self.extra_main_cf)
        return settings

    def main_cf_text(self) -> str:
        return render_main_cf(self.shipped_main_cf.read_text(), self.overrides())

    def master_cf_text(self) -> str:
        smtpd = f"{self.port:<9} inet  n       -       n       -       -       smtpd\n"
        return smtpd + _SERVICES + self.extra_master_cf

    def prepare(self) -> None:
        """Write main.cf/master.cf and create the queue (idempotent; start() calls it)."""
        if self._prepared:
            return
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        os.chown(self.data_dir, *self.system.user_ids("postfix"))
        (self.config_dir / "main.cf").write_text(self.main_cf_text())
        (self.config_dir / "master.cf").write_text(self.master_cf_text())
        self.maillog_path.touch()
        self.run(self.postfix, "-c", self.conf, "post-install", "create-missing")
        self._prepared = True
        self._verify_rendering()
        if warnings := self.config_warnings():
            raise PeerError("postconf warns about the rendered configuration:\n" + warnings)

    def _verify_rendering(self) -> None:
        got = self.postconf(*self.overrides())
        for name, want in self.overrides().items():
            if got.get(name) != want:
                raise PeerError(f"main.cf renders {name} = {got.get(name)!r}, expected {want!r}")
        sasl = self.postconf("smtpd_sasl_auth_enable", "smtpd_sasl_type")
        if sasl != {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot"}:
            raise PeerError(f"rendered main.cf does not enable Dovecot SASL: {sasl}")

    def config_warnings(self) -> str:
        """postconf's warnings about main.cf and master.cf (unknown or unused parameters...)."""
        res = subprocess.run(
            self.system.cmd(self.postconf_bin, "-c", self.conf, "-n"),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if res.returncode != 0:
            return res.stderr.strip() or f"postconf -n exited {res.returncode}"
        return "\n".join(line for line in res.stderr.splitlines() if "warning" in line)

    def postconf(self, *names: str) -> dict[str, str]:
        """main.cf values as written, ``$name`` not expanded (``postconf -c DIR NAME...``)."""
        out = self.run(self.postconf_bin, "-c", self.conf, *names)
        values: dict[str, str] = {}
        for line in out.splitlines():
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
        return values

    def queue_socket_path(self, relative: str = SHIPPED_SASL_PATH) -> Path:
        """Absolute path of a socket named relative to the queue directory.

        With the shipped ``smtpd_sasl_path = private/saslnetauth`` the auth
        server must listen here; the queue is created first if needed.
        """
        self.prepare()
        return self.queue_dir / relative

    @property
    def sasl_socket_file(self) -> Path | None:
        """The UNIX socket smtpd will connect to (``None`` for ``inet:``)."""
        path = self.sasl_path
        if path is None:
            self.prepare()
            path = self.postconf("smtpd_sasl_path")["smtpd_sasl_path"]
        if path.startswith("inet:"):
            return None
        return self.system.outside(path) if path.startswith("/") else self.queue_dir / path

    def mail_version(self) -> str:
        """The Postfix release that runs (``postconf -d -h mail_version``)."""
        return self.run(self.postconf_bin, "-d", "-h", "mail_version").strip()

    @property
    def conf(self) -> str:
        """The configuration directory as Postfix sees it (``postfix -c``)."""
        return self.system.inside(self.config_dir)

    # -- life cycle ----------------------------------------------------
    def start(self) -> None:
        self.prepare()
        self.run(self.postfix, "-c", self.conf, "check")
        self._started = True
        rc, output = run_daemon_command(self.system.cmd(self.postfix, "-c", self.conf, "start"))
        if rc != 0:
            raise PeerError(f"postfix start exited {rc}:\n{output}\n{tail(self.maillog())}")
        self._master_pid = read_pid(self.queue_dir / "pid" / "master.pid")
        wait_port(self.host, self.port, pid=self._master_pid)  # in master's network namespace
        if self.ipv6:
            wait_port("::1", self.port)

    def stop(self) -> None:
        """``postfix stop``, then make sure master and all its children are gone."""
        if not self._started:
            return  # never started, or stopped already: never touch a stale pid
        self._started = False
        pid = self._master_pid or read_pid(self.queue_dir / "pid" / "master.pid")
        run_daemon_command(self.system.cmd(self.postfix, "-c", self.conf, "stop"))
        if pid is not None:
            reap_session(pid)
        self._master_pid = None

    def run(self, *cmd: str) -> str:
        """Run a Postfix command (in the root); its stdout, or :class:`PeerError` with the maillog."""
        res = subprocess.run(
            self.system.cmd(*cmd), capture_output=True, text=True, check=False, timeout=60
        )
        if res.returncode != 0:
            raise PeerError(
                f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}{res.stderr}\n"
                f"maillog:\n{tail(self.maillog())}"
            )
        return res.stdout

    # -- logs ----------------------------------------------------------
    def maillog(self) -> str:
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current length of the log, for ``wait_log(..., since=mark)``."""
        return len(self.maillog())

    def wait_log(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, since: int = 0
    ) -> re.Match[str]:
        """Wait for ``pattern`` in the log after offset ``since`` (see :meth:`log_mark`)."""
        return wait_file_match(self.maillog_path, pattern, timeout, since)

    # -- clients bound to this instance ----------------------------------
    def login(
        self, source_ip: str, user: str, password: str, mech: str = "PLAIN"
    ) -> tuple[int, str]:
        return smtp_login(loopback_for(source_ip), self.port, source_ip, user, password, mech)

    def relay(
        self, source_ip: str, user: str | None, password: str | None, mech: str = "PLAIN"
    ) -> RelayResult:
        return smtp_relay(loopback_for(source_ip), self.port, source_ip, user, password, mech)

    def inbound(self, source_ip: str, rcpt: str = LOCAL_RECIPIENT) -> tuple[int, int, int]:
        return smtp_inbound(loopback_for(source_ip), self.port, source_ip, rcpt)

    def swaks(
        self, source_ip: str, user: str, password: str, mech: str = "PLAIN"
    ) -> tuple[int, str]:
        return swaks(loopback_for(source_ip), self.port, source_ip, user, password, mech)


# -- SMTP clients -------------------------------------------------------------


class RelayResult(NamedTuple):
    auth_code: int | None
    """AUTH reply code, ``None`` when no login was attempted."""
    auth_message: str
    rcpt_code: int
    rcpt_message: str


def _connect(host: str, port: int, source_ip: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP(
        host,
        port,
        local_hostname=CLIENT_HELO,
        timeout=SMTP_TIMEOUT,
        source_address=(source_ip, 0),
    )
    smtp.ehlo()
    return smtp


def send_message(smtp: smtplib.SMTP, user: str, subject: str, body: str) -> tuple[int, int]:
    """(RCPT, end of DATA) codes of one message from ``user`` to the outside recipient
    on an authenticated session (0: DATA not reached); the session is then quit."""
    smtp.mail(f"{user}@saslnetauth.test")
    rcpt, _ = smtp.rcpt(OUTSIDE_RECIPIENT)
    data = 0
    if rcpt == 250:
        try:
            data, _ = smtp.data(f"Subject: {subject}\r\n\r\n{body}\r\n")
        except smtplib.SMTPDataError as exc:
            data = exc.smtp_code
    smtp.quit()
    return rcpt, data


def _auth(smtp: smtplib.SMTP, user: str, password: str, mech: str) -> tuple[int, str]:
    """One AUTH exchange with PLAIN (initial response) or LOGIN (two challenges)."""
    mech = mech.upper()
    if mech == "PLAIN":
        b64 = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, msg = smtp.docmd("AUTH", f"PLAIN {b64}")
    elif mech == "LOGIN":
        code, msg = smtp.docmd("AUTH", "LOGIN")
        for answer in (user, password):
            if code != 334:
                break
            code, msg = smtp.docmd(base64.b64encode(answer.encode()).decode())
    else:
        raise ValueError(f"unsupported mechanism {mech}")
    return code, msg.decode(errors="replace")


def smtp_login(
    host: str, port: int, source_ip: str, user: str, password: str, mech: str = "PLAIN"
) -> tuple[int, str]:
    """EHLO + AUTH from ``source_ip``; returns the final AUTH reply (235, 535, 454, ...)."""
    with _connect(host, port, source_ip) as smtp:
        result = _auth(smtp, user, password, mech)
        smtp.quit()
    return result


def smtp_relay(
    host: str,
    port: int,
    source_ip: str,
    user: str | None,
    password: str | None,
    mech: str = "PLAIN",
    rcpt: str = OUTSIDE_RECIPIENT,
) -> RelayResult:
    """Log in (unless ``user`` is None), then MAIL FROM/RCPT TO an outside domain.

    The session goes on after a failed AUTH, as an attacker's would; no DATA
    is sent. ``rcpt_code`` is 250 when relaying is allowed, 554 when
    reject_unauth_destination refuses it.
    """
    with _connect(host, port, source_ip) as smtp:
        auth_code: int | None = None
        auth_msg = ""
        if user is not None:
            auth_code, auth_msg = _auth(smtp, user, password or "", mech)
        code, msg = smtp.mail(f"sender@{OUTSIDE_DOMAIN}")
        if code != 250:
            raise PeerError(f"MAIL FROM refused: {code} {msg!r}")
        rcpt_code, rcpt_msg = smtp.rcpt(rcpt)
        smtp.rset()
        smtp.quit()
    return RelayResult(auth_code, auth_msg, rcpt_code, rcpt_msg.decode(errors="replace"))


def smtp_inbound(
    host: str, port: int, source_ip: str, rcpt: str = LOCAL_RECIPIENT
) -> tuple[int, int, int]:
    """An unauthenticated message to a local recipient; returns (MAIL, RCPT, DATA) codes."""
    message = (
        f"From: <sender@{OUTSIDE_DOMAIN}>\r\nTo: <{rcpt}>\r\n"
        "Subject: saslnetauth inbound test\r\n\r\ninbound mail needs no AUTH\r\n"
    )
    with _connect(host, port, source_ip) as smtp:
        mail_code, _ = smtp.mail(f"sender@{OUTSIDE_DOMAIN}")
        rcpt_code, _ = smtp.rcpt(rcpt)
        data_code = 0
        if mail_code == 250 and rcpt_code == 250:
            data_code, _ = smtp.data(message)
        smtp.quit()
    return mail_code, rcpt_code, data_code


def swaks(
    host: str,
    port: int,
    source_ip: str,
    user: str,
    password: str,
    mech: str = "PLAIN",
    quit_after: str = "AUTH",
    extra: Sequence[str] = (),
) -> tuple[int, str]:
    """Run swaks (exit 0 = success, 28 = AUTH failed); returns (exit code, output)."""
    binary = shutil.which("swaks")
    if binary is None:
        missing("program swaks")
    assert binary is not None
    cmd = [
        binary,
        "--server",
        host,
        "--port",
        str(port),
        "--local-interface",
        source_ip,
        "--helo",
        CLIENT_HELO,
        "--auth",
        mech.upper(),
        "--auth-user",
        user,
        "--auth-password",
        password,
        "--quit-after",
        quit_after,
        "--timeout",
        str(int(SMTP_TIMEOUT)),
        *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    return res.returncode, res.stdout + res.stderr
