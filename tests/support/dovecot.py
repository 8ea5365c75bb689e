"""A private Dovecot 2.3 instance, and Dovecot's clients (doveadm, IMAP) for any auth server.

The instance runs as root from one config file under a temp dir
(docs/protocols.md section 4). It serves the auth-client protocol on
``<base_dir>/auth-client`` (mode 0666), optionally on more UNIX paths (e.g.
inside a Postfix queue's ``private/``) and on TCP, and optionally IMAP.

Dovecot 2.3 picks a listener's protocol from the part of its name after the
last ``-`` (``login``, ``master``, ``userdb``, ... ; anything else, and every
inet listener, is auth-client), so listener names here never end in those.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from tests.support.imapidle import ImapIdle
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
    wait_unix,
)
from tests.support.peers import Daemon, missing, require_binary
from tests.support.roots import trixie

LOGIN_USER = "dovenull"
"""Dovecot's login processes refuse to run as root (imap-login: "must not be run as root")."""
MAIL_USER = "nobody"
"""Dovecot refuses mail access as UID 0, so IMAP sessions run as this user."""


def mail_ids() -> tuple[int, int]:
    """uid and gid of :data:`MAIL_USER`."""
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def passwd_line(
    user: str,
    password: str,
    allow_nets: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """A passwd-file line with a ``{PLAIN}`` password and optional ``allow_nets=``."""
    fields = [*extra] + ([f"allow_nets={allow_nets}"] if allow_nets is not None else [])
    return f"{user}:{{PLAIN}}{password}::::::{' '.join(fields)}"


def passwd_file_passdb(path: str | Path) -> str:
    return (
        f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {path}\n}}\n"
    )


def passwd_file_userdb(path: str | Path, home: str | Path) -> str:
    """Users of the passwd file exist for userdb lookups; uid/gid/home filled in."""
    uid, gid = mail_ids()
    return (
        "userdb {\n  driver = passwd-file\n"
        f"  args = username_format=%u {path}\n"
        f"  default_fields = uid={uid} gid={gid} home={home}/%u\n}}\n"
    )


def checkpassword_passdb(program: str | Path) -> str:
    return f"passdb {{\n  driver = checkpassword\n  args = {program}\n}}\n"


def static_userdb(home: str | Path, allow_all_users: bool = False) -> str:
    uid, gid = mail_ids()
    extra = " allow_all_users=yes" if allow_all_users else ""
    return f"userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={home}/%u{extra}\n}}\n"


def prefetch_userdb() -> str:
    return "userdb {\n  driver = prefetch\n}\n"


class AuthTest(NamedTuple):
    """Result of ``doveadm auth test``: ``ok`` is True/False only for a real OK/FAIL reply."""

    ok: bool
    output: str

    @property
    def tempfail(self) -> bool:
        """A FAIL with ``code=temp_fail`` (Dovecot: internal/temporary failure)."""
        return not self.ok and self.fields.get("code") == "temp_fail"

    @property
    def fields(self) -> dict[str, str]:
        """The reply's extra fields (``user``, ``code``, ``reason``, ...)."""
        out: dict[str, str] = {}
        for line in self.output.splitlines():
            m = re.match(r"^\s+([\w-]+)=(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2)
        return out


def doveadm_binary() -> str:
    return require_binary("doveadm")


def doveadm_auth_test(
    socket_path: str | Path,
    user: str,
    password: str,
    rip: str | None = None,
    service: str = "smtp",
    *,
    config: str | Path = "/dev/null",
    extra: Mapping[str, str] | None = None,
    doveadm: Sequence[str] | None = None,
) -> AuthTest:
    """``doveadm auth test -a SOCKET -x rip=IP -x service=SVC USER PASS`` against any server.

    doveadm is a real auth-client of any UNIX socket speaking the protocol
    (``-a`` takes a UNIX path only, not host:port). Raises :class:`PeerError`
    when doveadm gets no verdict (socket missing, protocol error): its exit
    code is 77 then too, the same as for a failed login. ``doveadm``: the
    command that runs doveadm (e.g. ``chroot DIR doveadm``); paths are then
    the ones doveadm sees.
    """
    base = list(doveadm) if doveadm is not None else [doveadm_binary()]
    cmd = [*base, "-c", str(config), "auth", "test", "-a", str(socket_path)]
    params = {"service": service, **({"rip": rip} if rip is not None else {}), **(extra or {})}
    for key, value in params.items():
        cmd += ["-x", f"{key}={value}"]
    cmd += [user, password]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    output = res.stdout + res.stderr
    if re.search(r"^passdb: .* auth succeeded$", res.stdout, re.M) and res.returncode == 0:
        return AuthTest(True, output)
    if re.search(r"^passdb: .* auth failed$", res.stdout, re.M):
        return AuthTest(False, output)
    if res.returncode == 75 and re.search(r"^\s+code=temp_fail$", output, re.M):
        return AuthTest(False, output)  # Dovecot prints no verdict line for a temporary failure
    raise PeerError(f"doveadm auth test gave no verdict (exit {res.returncode}):\n{output}")


class _SourceIMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 whose connection starts from a chosen source address."""

    def __init__(self, host: str, port: int, source_ip: str, timeout: float) -> None:
        self._source_ip = source_ip
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source_ip, 0)
        )


def imap_login(host: str, port: int, source_ip: str, user: str, password: str) -> bool:
    """IMAP LOGIN from ``source_ip``: True on OK, False on ``NO [AUTHENTICATIONFAILED]``.

    Anything else (connection refused, BYE, tempfail) raises :class:`PeerError`.
    """
    try:
        imap = _SourceIMAP4(host, port, source_ip, timeout=30)
    except (OSError, imaplib.IMAP4.error) as e:
        raise PeerError(f"IMAP connect to {host}:{port} from {source_ip} failed: {e}") from e
    try:
        imap.login(user, password)
        ok = True
    except imaplib.IMAP4.error as e:
        if "AUTHENTICATIONFAILED" not in str(e):
            imap.shutdown()
            raise PeerError(f"IMAP LOGIN gave neither OK nor AUTHENTICATIONFAILED: {e}") from e
        ok = False
    imap.logout()
    return ok


class DovecotInstance(Daemon):
    """A private Dovecot 2.3 under ``tmpdir``.

    ``passwd`` lines (see :func:`passwd_line`) go into ``tmpdir/passwd``, used
    by the default passwd-file passdb and userdb; pass ``passdb``/``userdb``
    block text to use something else (e.g. :func:`checkpassword_passdb`).
    ``protocols``: ``()`` for an auth-only Dovecot, ``("imap",)`` to also serve
    IMAP on :attr:`imap_port` (127.0.0.1 and ::1), ``("pop3",)`` POP3 on :attr:`pop3_port`. ``auth_inet=True`` adds an
    auth-client TCP listener on 127.0.0.1 (:attr:`auth_inet`).
    ``auth_sockets``: extra absolute auth-client UNIX socket paths.
    ``auth_failure_delay`` defaults to 0 and the auth penalty is switched off
    so that repeated failures stay fast and never reach Postfix's 10 s timeout.
    """

    def __init__(
        self,
        tmpdir: Path,
        *,
        passwd: Sequence[str] = (),
        passdb: str | None = None,
        userdb: str | None = None,
        protocols: Sequence[str] = (),
        auth_inet: bool = False,
        auth_sockets: Sequence[str | Path] = (),
        auth_debug: bool = False,
        auth_failure_delay: str = "0",
        extra_config: str = "",
    ) -> None:
        require_root()
        self._find_programs()
        self.root = make_peer_dir(Path(tmpdir))
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.mail_dir = self.root / "mail"
        self.home_dir = self.root / "home"
        self.config_file = self.root / "dovecot.conf"
        self.log_file = self.root / "dovecot.log"
        self.passwd_file = self.root / "passwd"
        self.passwd = list(passwd)
        self.passdb = passdb if passdb is not None else passwd_file_passdb(self.passwd_file)
        self.userdb = (
            userdb if userdb is not None else passwd_file_userdb(self.passwd_file, self.home_dir)
        )
        self.protocols = tuple(protocols)
        self.ipv6 = ipv6_loopback_usable()
        self.imap_port = free_port() if "imap" in self.protocols else None
        self.pop3_port = free_port() if "pop3" in self.protocols else None
        self.auth_inet_port = free_port() if auth_inet else None
        self.auth_sockets = [Path(p) for p in auth_sockets]
        self.auth_debug = auth_debug
        self.auth_failure_delay = auth_failure_delay
        self.extra_config = extra_config
        self._started = False
        self._master_pid: int | None = None

    #: How an inet_listener names its address: ``address`` (2.3) or ``listen`` (2.4).
    address_key = "address"

    def _basics(self) -> str:
        """The lines both versions' configurations share: paths, protocols, users."""
        listen = "127.0.0.1, ::1" if self.ipv6 else "127.0.0.1"
        return (
            f"base_dir = {self.inside(self.base_dir)}\n"
            f"state_dir = {self.inside(self.state_dir)}\n"
            f"log_path = {self.inside(self.log_file)}\n"
            f"protocols = {' '.join(self.protocols)}\n"
            f"listen = {listen}\n"
            "default_internal_user = root\n"
            f"default_login_user = {LOGIN_USER}\n"
            "ssl = no\n"
        )

    def _auth_settings(self) -> str:
        return (
            "auth_mechanisms = plain login\n"
            "auth_verbose = yes\n"
            f"auth_debug = {'yes' if self.auth_debug else 'no'}\n"
            f"auth_failure_delay = {self.auth_failure_delay}\n"
        )

    def _services(self) -> str:
        """The auth service's listeners, anvil without the auth penalty, the IMAP and
        POP3 listeners and the test's extra configuration (both versions)."""
        key = self.address_key
        listen = "127.0.0.1, ::1" if self.ipv6 else "127.0.0.1"
        listeners = "  unix_listener auth-client {\n    mode = 0666\n  }\n"
        for path in self.auth_sockets:
            listeners += f"  unix_listener {self.inside(path)} {{\n    mode = 0666\n  }}\n"
        if self.auth_inet_port:
            listeners += (
                f"  inet_listener auth-client {{\n    {key} = 127.0.0.1\n"
                f"    port = {self.auth_inet_port}\n  }}\n"
            )
        logins = ""
        for service, port in (("imap", self.imap_port), ("pop3", self.pop3_port)):
            if port:
                logins += (
                    f"service {service}-login {{\n"
                    f"  inet_listener {service} {{\n    {key} = {listen}\n"
                    f"    port = {port}\n  }}\n"
                    f"  inet_listener {service}s {{\n    port = 0\n  }}\n}}\n"
                )
        return (
            f"service auth {{\n{listeners}}}\n"
            "# no exponential auth penalty for repeated failures from one IP\n"
            "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
            f"{logins}{self.extra_config}\n"
        )

    def _find_programs(self) -> None:
        self.dovecot_cmd = [require_binary("dovecot")]
        self.doveadm_cmd = [doveadm_binary()]
        for user in (LOGIN_USER, MAIL_USER):
            try:
                pwd.getpwnam(user)
            except KeyError:
                missing(f"system user {user} (created by the dovecot-core package)")

    def inside(self, path: str | Path) -> str:
        """``path`` as Dovecot sees it (the same here; relative to the root in a chroot)."""
        return str(path)

    @property
    def auth_socket(self) -> Path:
        """Dovecot's own auth-client UNIX socket."""
        return self.base_dir / "auth-client"

    @property
    def auth_inet(self) -> str | None:
        """``inet:127.0.0.1:PORT`` of the auth-client TCP listener (Postfix syntax)."""
        return f"inet:127.0.0.1:{self.auth_inet_port}" if self.auth_inet_port else None

    def config_text(self) -> str:
        return f"""\
# private Dovecot instance (tests/support/dovecot.py)
{self._basics()}disable_plaintext_auth = no
{self._auth_settings()}mail_location = maildir:{self.mail_dir}/%u
{self.passdb}{self.userdb}
{self._services()}"""

    # -- life cycle ----------------------------------------------------
    def start(self) -> None:
        for d in (self.base_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        for d in (self.mail_dir, self.home_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o1777)
        self.passwd_file.write_text("".join(f"{line}\n" for line in self.passwd))
        self.passwd_file.chmod(0o644)
        self.config_file.write_text(self.config_text())
        self.log_file.touch()
        self._started = True
        rc, output = run_daemon_command([*self.dovecot_cmd, "-c", self.inside(self.config_file)])
        self._master_pid = read_pid(self.base_dir / "master.pid")
        if rc != 0:
            raise PeerError(
                f"dovecot -c {self.config_file} exited {rc}:\n{output}\n{tail(self.log())}"
            )
        # /proc/net/unix names a socket by the path it was bound to (inside a chroot)
        wait_unix(self.inside(self.auth_socket))
        for path in self.auth_sockets:
            wait_unix(self.inside(path))
        if self.auth_inet_port:
            wait_port("127.0.0.1", self.auth_inet_port)
        if self.pop3_port:
            wait_port("127.0.0.1", self.pop3_port)
        if self.imap_port:
            wait_port("127.0.0.1", self.imap_port)
            if self.ipv6:
                wait_port("::1", self.imap_port)

    def stop(self) -> None:
        """SIGTERM the master (from ``master.pid``), then make sure all its processes are gone.

        This is what ``doveadm stop`` does, minus its ~3 s of polling; children
        left after 5 s are killed (the master's pid is their session id).
        """
        if not self._started:
            return  # never started, or stopped already: never touch a stale pid
        self._started = False
        pid = self._master_pid or read_pid(self.base_dir / "master.pid")
        if pid is None:
            return
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        reap_session(pid)
        self._master_pid = None

    # -- clients -------------------------------------------------------
    def auth_test(
        self,
        user: str,
        password: str,
        rip: str | None = None,
        service: str = "smtp",
        socket: str | Path | None = None,
    ) -> AuthTest:
        """doveadm auth test against ``socket`` (default: this Dovecot's auth-client)."""
        return doveadm_auth_test(
            self.inside(socket or self.auth_socket),
            user,
            password,
            rip,
            service,
            config=self.inside(self.config_file),
            doveadm=self.doveadm_cmd,
        )

    def user_lookup(self, user: str) -> tuple[bool | None, str]:
        """``doveadm user USER``: True (exit 0), False (67, unknown user), None (error)."""
        res = subprocess.run(
            [*self.doveadm_cmd, "-c", self.inside(self.config_file), "user", user],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        found = {0: True, 67: False}.get(res.returncode)
        return found, res.stdout + res.stderr

    def pop3_login(self, source_ip: str, user: str, password: str) -> str:
        """USER/PASS from ``source_ip``: the server's answer to PASS (``+OK ...``/``-ERR ...``)."""
        if self.pop3_port is None:
            raise PeerError("this Dovecot instance does not serve POP3 (protocols=('pop3',))")
        host = loopback_for(source_ip)
        with socket.create_connection(
            (host, self.pop3_port), timeout=30, source_address=(source_ip, 0)
        ) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(f"USER {user}\r\n".encode())
            f.flush()
            f.readline()
            f.write(f"PASS {password}\r\n".encode())
            f.flush()
            answer = f.readline().decode(errors="replace").strip()
            f.write(b"QUIT\r\n")
            f.flush()
        return answer

    def imap_idle(self, source_ip: str, user: str, password: str) -> ImapIdle:
        """An IMAP session of ``user`` from ``source_ip`` sitting in IDLE (:class:`ImapIdle`)."""
        if self.imap_port is None:
            raise PeerError("this Dovecot instance does not serve IMAP (protocols=('imap',))")
        return ImapIdle(loopback_for(source_ip), self.imap_port, source_ip, user, password)

    def imap_login(self, source_ip: str, user: str, password: str) -> bool:
        if self.imap_port is None:
            raise PeerError("this Dovecot instance does not serve IMAP (protocols=('imap',))")
        return imap_login(loopback_for(source_ip), self.imap_port, source_ip, user, password)

    # -- logs ----------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current length of the log, for ``wait_log(..., since=mark)``."""
        return len(self.log())

    def wait_log(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, since: int = 0
    ) -> re.Match[str]:
        """Wait for ``pattern`` in the log after offset ``since`` (see :meth:`log_mark`)."""
        return wait_file_match(self.log_file, pattern, timeout, since)


# -- Dovecot 2.4 (Debian 13) in the chroot built by .ci/debian13 ---------------------


def trixie_root() -> Path:
    """The Debian 13 chroot (:func:`tests.support.roots.trixie`) with Dovecot 2.4 and
    its Lua passdb, or missing()."""
    require_root()
    root = trixie().path
    if (
        not (root / "usr/sbin/dovecot").exists()
        or not (root / "usr/lib/dovecot/modules/auth/libauthdb_lua.so").exists()
    ):
        missing(f"Debian 13 chroot with Dovecot 2.4 and dovecot-auth-lua at {root} (.ci/debian13)")
    return root


class Dovecot24Instance(DovecotInstance):
    """A private Dovecot 2.4 run inside the Debian 13 chroot (:func:`trixie_root`).

    ``tmpdir`` must lie inside the chroot (:meth:`tmpdir`); the config names
    paths as Dovecot sees them (:meth:`inside`), while :attr:`auth_socket`,
    :attr:`log_file`, ... stay host paths, reachable from the host as they are.
    ``passdb``/``userdb`` default to passwd-file (2.4 syntax).
    """

    address_key = "listen"

    def __init__(self, tmpdir: Path, **kw: object) -> None:
        self.chroot = trixie_root()
        super().__init__(tmpdir, **kw)  # type: ignore[arg-type]

    @staticmethod
    def tmpdir(prefix: str = "sna-") -> Path:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=prefix, dir=trixie_root() / "tmp"))
        path.chmod(0o755)
        return path

    def _find_programs(self) -> None:
        self.dovecot_cmd = ["chroot", str(self.chroot), "dovecot"]
        self.doveadm_cmd = ["chroot", str(self.chroot), "doveadm"]

    def inside(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return "/" + str(p.relative_to(self.chroot))
        except ValueError:
            raise PeerError(f"{p} is outside the chroot {self.chroot}") from None

    def config_text(self) -> str:
        passwd = self.inside(self.passwd_file)
        passdb = self.passdb
        if passdb.startswith("passdb {") and "passwd-file" in passdb:
            passdb = f"passdb passwd-file {{\n  passwd_file_path = {passwd}\n}}\n"
        userdb = self.userdb
        if userdb.startswith("userdb {") and "passwd-file" in userdb:
            userdb = (
                f"userdb passwd-file {{\n  passwd_file_path = {passwd}\n"
                "  fields {\n    uid = nobody\n    gid = nogroup\n"
                f"    home = {self.inside(self.home_dir)}/%{{user}}\n  }}\n}}\n"
            )
        return f"""\
# private Dovecot 2.4 instance (tests/support/dovecot.py)
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
{self._basics()}auth_allow_cleartext = yes
{self._auth_settings()}auth_cache_size = 0
mail_driver = maildir
mail_path = {self.inside(self.mail_dir)}/%{{user}}
{passdb}{userdb}
{self._services()}"""
