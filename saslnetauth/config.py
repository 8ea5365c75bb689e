"""Configuration: a TOML file, environment variables and command-line options.

Precedence (highest first): command-line option, environment variable,
configuration file, built-in default. The file is ``--config FILE`` or
``$SASLNETAUTH_CONFIG`` when given (it must then exist), else
``/etc/saslnetauth/saslnetauth.toml`` if it exists, else none. The current
directory is never searched: a file planted where an admin happens to run
``saslnetauth`` could redirect the database or set ``alert_command``. For
the same reason a file writable by its group or by others, or owned by a
user other than root and the one running saslnetauth, is refused. Unknown
keys are errors, so a typo never silently leaves a default in place. Every key is documented in
``dovecot-examples/saslnetauth.toml`` and the README.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saslnetauth.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATHS",
    "DEFAULT_DATABASE_URL",
    "Config",
    "load_config",
]

DEFAULT_DATABASE_URL = "sqlite:////var/lib/saslnetauth/saslnetauth.db"
DEFAULT_CONFIG_PATHS = (Path("/etc/saslnetauth/saslnetauth.toml"),)
ENV_DATABASE = "SASLNETAUTH_DATABASE_URL"
ENV_CONFIG = "SASLNETAUTH_CONFIG"
#: Who may connect to the UNIX sockets by default, besides root and the server's own
#: user: Postfix's smtpd, Exim (Debian's user name) and Dovecot's auth process
#: (saslnetauth-checkpassword). Skipped where the system does not have them.
DEFAULT_ALLOWED_USERS = ("root", "postfix", "Debian-exim", "dovecot")
DEFAULT_ALLOWED_GROUPS = ("postfix", "Debian-exim", "dovecot")


@dataclass
class PasswordsConfig:
    #: Scheme for new hashes: ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, SSHA512.
    default_scheme: str = "ARGON2ID"
    #: After a successful login, store the password again in the default scheme.
    rehash_on_login: bool = False
    argon2_memory_kib: int = 65536
    argon2_time_cost: int = 3
    argon2_parallelism: int = 1
    bcrypt_cost: int = 10
    sha_crypt_rounds: int = 5000


@dataclass
class ServeConfig:
    #: Where to listen: ``unix:/path`` or ``inet:HOST:PORT`` (``inet:[::1]:PORT``).
    listen: list[str] = field(default_factory=lambda: ["unix:/run/saslnetauth/auth-client"])
    #: Seconds from a request's arrival before a failure is answered (0 allowed; well
    #: under Postfix's 10 s); never earlier than the slowest verification (deadline.py).
    failure_delay: float = 2.0
    #: reason= text of every FAIL, whatever the cause ("" = send none, like Dovecot).
    fail_reason: str = "Authentication failed"
    #: Permissions, owner and group of UNIX sockets we create.
    socket_mode: str = "0660"
    socket_owner: str = ""
    socket_group: str = ""
    #: Who may connect to a UNIX socket (SO_PEERCRED): users and groups by name or
    #: number. Root and the server's own user always may. Names that do not exist
    #: are an error, except the built-in ones (postfix, Debian-exim, dovecot), which
    #: are skipped on systems without them.
    allowed_users: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_USERS))
    allowed_groups: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_GROUPS))
    #: TCP clients allowed to connect (addresses or networks); others are closed.
    allowed_tcp_peers: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    #: Allow TCP listeners on addresses other than loopback (whoever connects
    #: chooses the rip= of its logins: restrict allowed_tcp_peers too).
    allow_remote_listen: bool = False
    #: Decision workers (0 = one per core): processes, or threads (see worker_mode).
    workers: int = 0
    #: "processes" (default: every core also runs the Python around the hashes) or
    #: "threads" (one process; only the hashes themselves run in parallel).
    worker_mode: str = "processes"
    #: Most requests being verified or waiting for a worker, over all clients.
    max_pending: int = 1024
    #: Most requests in flight on one connection; more closes the connection.
    max_requests_per_connection: int = 64
    #: Most client connections at once; more are refused.
    max_connections: int = 1000
    #: Most connections of one peer (a UNIX user, a TCP address); 0 = half of
    #: max_connections, so that one peer can never take all of them.
    max_connections_per_peer: int = 0
    #: Seconds a new connection may take to send its VERSION (Postfix, Exim and
    #: Dovecot send it at once); silent ones are closed.
    handshake_timeout: float = 5.0
    #: Seconds from a request's arrival (brake included) to its decision; later it fails
    #: temporarily (requests still queued then are never worked on).
    request_timeout: float = 8.0
    #: Share of the decision workers that may verify logins which cannot succeed (address
    #: outside every network that applies), and only while no login that could succeed
    #: waits (at least one worker unless 0). Beyond it they are answered FAIL without a
    #: hash (0 = never verify them: no stolen-password alerts; 1 = no bound).
    hopeless_share: float = 0.5
    #: Seconds a request may wait for the client's CONT before it expires.
    cont_timeout: float = 60.0
    #: Seconds without any traffic before an idle connection is closed (0 = never).
    #: Longer than Postfix's smtpd_timeout (300 s) plus max_idle (100 s): an smtpd
    #: keeps its connection between sessions and finds it closed only on its next
    #: write (it reconnects then).
    idle_timeout: float = 600.0
    #: Brute-force brake per client (IPv4 address, IPv6 /penalty_ipv6_prefix), like
    #: Dovecot's auth_penalty: after penalty_free_failures failures, each request waits
    #: penalty_base seconds, doubling per failure, at most penalty_max (0 = off).
    #: A success clears it.
    penalty_base: float = 0.5
    penalty_max: float = 4.0
    penalty_free_failures: int = 2
    penalty_ipv6_prefix: int = 64
    #: Clients remembered at most (least recently failed are forgotten first).
    penalty_max_entries: int = 100000
    #: Also brake failures per user name, but only those from outside the user's own
    #: networks (so it can never lock the real user out of an allowed network);
    #: unknown names alike (outside the global networks), so it enumerates nobody.
    user_penalty: bool = False
    #: Command run when a correct password comes from a forbidden network (likely
    #: stolen credentials), e.g. ["/usr/local/bin/alert-admin"]. Its environment is
    #: only PATH, LANG, SASLNETAUTH_USER, SASLNETAUTH_RIP (canonical),
    #: SASLNETAUTH_SERVICE and SASLNETAUTH_REASON; never the password. [] = none.
    alert_command: list[str] = field(default_factory=list)
    #: Seconds before the alert command is killed.
    alert_timeout: float = 10.0
    #: Serve Prometheus metrics at http://ADDR/metrics: inet:HOST:PORT or unix:/path
    #: ("" = off). Keep it on loopback or a management network.
    metrics_listen: str = ""
    #: TCP clients that may read the metrics (a UNIX socket: its mode 0600 decides).
    metrics_allow_from: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    #: Answer Dovecot 2.4's Lua userdb (does this enabled user exist?) with the
    #: auth-master USER lookup on this socket: unix:/path ("" = off). Mode 0600.
    userdb_listen: str = ""


@dataclass
class PolicyConfig:
    #: Answer Dovecot's auth policy requests (auth_policy_server_url) over HTTP here:
    #: inet:127.0.0.1:4001 or unix:/path ("" = off).
    listen: str = ""
    #: What Dovecot is configured to ask: "before_auth" (auth_policy_check_before_auth =
    #: yes: outside networks are refused before any password is checked; leaks nothing
    #: about the password) or "after_auth" (check_before_auth = no, check_after_auth =
    #: yes: allow is asked only after a correct password, so a refusal reveals that the
    #: password was right, and raises the stolen-password alert). See README.
    mode: str = "before_auth"
    #: Users saslnetauth does not know: "global" (the global networks apply) or "reject".
    unknown_users: str = "global"
    #: msg of a refusal (IMAP clients show it; keep it like a wrong-password text).
    reject_message: str = "Authentication failed."
    #: "Name: value" that every request must carry (auth_policy_server_api_header),
    #: compared in constant time ("" = none).
    api_header: str = ""
    #: TCP clients allowed to connect (networks); others are closed at once.
    allow_from: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    #: Largest request body (bytes), seconds to send one request, idle keep-alive seconds.
    max_body: int = 16384
    request_timeout: float = 5.0
    idle_timeout: float = 60.0
    #: Seconds the user lookup may take before the request is refused (below
    #: Dovecot's policy timeout, 2 s by default).
    lookup_timeout: float = 1.5


@dataclass
class CheckpasswordConfig:
    #: Socket of the running `saslnetauth serve` (unix:/path, /path or inet:HOST:PORT).
    socket: str = "/run/saslnetauth/auth-client"
    #: When no server answers: "local" decides in-process, "tempfail" fails temporarily.
    fallback: str = "local"
    #: Accept Dovecot master-user logins (MASTER_USER set); refused by default.
    allow_master_user: bool = False


@dataclass
class PamConfig:
    #: Check the passwords of users whose backend is "pam" with PAM.
    enabled: bool = False
    #: PAM service name: /etc/pam.d/<service> (see dovecot-examples/pam/saslnetauth).
    service: str = "saslnetauth"
    #: Also admit PAM (system) users that are not listed in saslnetauth, under the
    #: global networks only. false: only listed users with backend "pam".
    any_user: bool = False


@dataclass
class ReportConfig:
    #: Keep a record of the server's verdicts in the database (table auth_events)
    #: for `saslnetauth report`; written in the background, never delaying a login.
    record: bool = True
    #: Days the record is kept.
    keep_days: int = 30
    #: Verdicts waiting to be written at most; more are dropped (and counted).
    queue_size: int = 10000


@dataclass
class LoggingConfig:
    #: debug, info, warning or error.
    level: str = "info"
    #: Also append log lines to this file ("" = standard error only).
    file: str = ""


@dataclass
class Config:
    #: SQLAlchemy URL of the database (env SASLNETAUTH_DATABASE_URL, option --database).
    database_url: str = DEFAULT_DATABASE_URL
    #: Compare user names in lower case (like Dovecot's default %Lu).
    lowercase_usernames: bool = True
    #: SQLite busy timeout / pool wait, seconds.
    database_timeout: float = 5.0
    #: Seconds a cached copy of the global networks is used before the database
    #: confirms it is current (inline, before the login is decided).
    global_cache_seconds: float = 1.0
    passwords: PasswordsConfig = field(default_factory=PasswordsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    checkpassword: CheckpasswordConfig = field(default_factory=CheckpasswordConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    pam: PamConfig = field(default_factory=PamConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: The file this was loaded from, if any (not a key).
    source: Path | None = field(default=None, metadata={"internal": True})


def _check_type(where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: cannot be set")
    raise ConfigError(f"{where}: unsupported setting")


def _fill(obj: Any, data: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        hint = hints[key]
        name = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a table [{key}]")
            _fill(getattr(obj, key), value, name)
        else:
            setattr(obj, key, _check_type(name, value, hint))


def find_config(path: str | os.PathLike[str] | None) -> Path | None:
    """The configuration file to read, or None."""
    explicit = path or os.environ.get(ENV_CONFIG)
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"configuration file {p} does not exist")
        return p
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    return None


def read_config_file(source: Path) -> str:
    """The text of a configuration file that only root or we can have written.

    Checked on the open descriptor (no window between check and read).
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{source} is not a regular file")
        if st.st_mode & 0o022:
            raise ConfigError(
                f"{source} is writable by its group or by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); refusing it: run chmod go-w {source}"
            )
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(
                f"{source} is owned by uid {st.st_uid}, neither root nor this user "
                f"(uid {os.geteuid()}); refusing it: run chown root {source}"
            )
        try:
            return fh.read().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None, database_url: str | None = None
) -> Config:
    """Load the configuration, applying the precedence rules above."""
    cfg = Config()
    source = find_config(path)
    if source is not None:
        try:
            data = tomllib.loads(read_config_file(source))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
        _fill(cfg, data, "")
        cfg.source = source
    env_url = os.environ.get(ENV_DATABASE)
    if database_url:
        cfg.database_url = database_url
    elif env_url:
        cfg.database_url = env_url
    validate(cfg)
    return cfg


#: Seconds Postfix (and saslnetauth-checkpassword's client) wait for an answer.
CLIENT_TIMEOUT = 10.0
#: Most seconds the configured delays may add up to, leaving 2 s of
#: CLIENT_TIMEOUT for the verification and the network.
DELAY_BUDGET = 8.0


def _check_delay_budget(s: ServeConfig) -> None:
    """The slowest failure: the client brake, then the failure delay, then the user
    brake, each at its maximum, must be answered before the clients give up."""
    parts = [("failure_delay", s.failure_delay), ("penalty_max", s.penalty_max)]
    if s.user_penalty:
        parts.append(("user_penalty (penalty_max again)", s.penalty_max))
    total = sum(v for _, v in parts)
    if total > DELAY_BUDGET:
        listed = " + ".join(f"{name} {value:g}" for name, value in parts)
        raise ConfigError(
            f"serve: the slowest failure would wait {listed} = {total:g} s, more than "
            f"{DELAY_BUDGET:g} s (Postfix and saslnetauth-checkpassword give up after "
            f"{CLIENT_TIMEOUT:g} s); lower failure_delay or penalty_max"
        )


def validate(cfg: Config) -> None:
    """Range checks that types alone do not catch."""
    s = cfg.serve
    if len(s.fail_reason) > 200 or not s.fail_reason.isprintable() or "\t" in s.fail_reason:
        raise ConfigError("serve.fail_reason: printable text of at most 200 characters")
    if not 0 <= s.failure_delay <= 8:
        raise ConfigError("serve.failure_delay: must be between 0 and 8 seconds (Postfix waits 10)")
    if s.penalty_max < 0 or s.penalty_base <= 0 or s.penalty_free_failures < 0:
        raise ConfigError("serve.penalty_*: penalty_base > 0, penalty_max and free failures >= 0")
    _check_delay_budget(s)
    if not 1 <= s.penalty_ipv6_prefix <= 128 or s.penalty_max_entries < 1:
        raise ConfigError("serve.penalty_ipv6_prefix: 1..128; penalty_max_entries >= 1")
    if s.alert_timeout <= 0:
        raise ConfigError("serve.alert_timeout: must be > 0")
    for name in ("max_pending", "max_requests_per_connection", "max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"serve.{name}: must be at least 1")
    if not 0 <= s.max_connections_per_peer <= s.max_connections:
        raise ConfigError("serve.max_connections_per_peer: 0 (automatic) up to max_connections")
    if not 0 < s.handshake_timeout <= 60:
        raise ConfigError("serve.handshake_timeout: more than 0, at most 60 seconds")
    for key, texts in (
        ("allowed_tcp_peers", s.allowed_tcp_peers),
        ("metrics_allow_from", s.metrics_allow_from),
    ):
        for text in texts:
            try:
                ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise ConfigError(f"serve.{key}: {text!r}: {exc}") from None
    for what, names in (("allowed_users", s.allowed_users), ("allowed_groups", s.allowed_groups)):
        for name in names:
            if not name or not name.isprintable() or ":" in name:
                raise ConfigError(f"serve.{what}: {name!r} is not a user or group name")
    if s.workers < 0:
        raise ConfigError("serve.workers: must be 0 (automatic) or more")
    if s.worker_mode not in ("processes", "threads"):
        raise ConfigError("serve.worker_mode: use processes or threads")
    if not 0.1 <= s.request_timeout <= 9.5:
        raise ConfigError("serve.request_timeout: 0.1 to 9.5 seconds (Postfix waits 10)")
    if not 0 <= s.hopeless_share <= 1:
        raise ConfigError("serve.hopeless_share: a share between 0 and 1")
    if s.cont_timeout <= 0 or s.idle_timeout < 0:
        raise ConfigError("serve.cont_timeout must be > 0 and serve.idle_timeout >= 0")
    if s.userdb_listen and not s.userdb_listen.startswith("unix:"):
        raise ConfigError("serve.userdb_listen: a UNIX socket, unix:/path (answers user lookups)")
    try:
        mode = int(s.socket_mode, 8)
    except ValueError:
        raise ConfigError(f"serve.socket_mode: {s.socket_mode!r} is not an octal mode") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"serve.socket_mode: {s.socket_mode!r} out of range")
    if cfg.report.keep_days < 1 or cfg.report.queue_size < 1:
        raise ConfigError("report.keep_days and report.queue_size: at least 1")
    if not cfg.pam.service or "/" in cfg.pam.service:
        raise ConfigError("pam.service: a PAM service name such as saslnetauth")
    _validate_policy(cfg.policy)
    if cfg.checkpassword.fallback not in ("local", "tempfail"):
        raise ConfigError("checkpassword.fallback: use local or tempfail")
    if cfg.logging.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("logging.level: use debug, info, warning or error")
    if cfg.database_timeout <= 0 or cfg.global_cache_seconds < 0:
        raise ConfigError("database_timeout must be > 0 and global_cache_seconds >= 0")


def _validate_policy(p: PolicyConfig) -> None:
    import ipaddress

    if p.mode not in ("before_auth", "after_auth"):
        raise ConfigError("policy.mode: use before_auth or after_auth")
    if p.unknown_users not in ("global", "reject"):
        raise ConfigError("policy.unknown_users: use global or reject")
    if len(p.reject_message) > 200 or not p.reject_message.isprintable():
        raise ConfigError("policy.reject_message: printable text of at most 200 characters")
    if p.api_header and (":" not in p.api_header or not p.api_header.partition(":")[2].strip()):
        raise ConfigError('policy.api_header: "Name: value"')
    for net in p.allow_from:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"policy.allow_from: {net!r} is not a network") from None
    if not 256 <= p.max_body <= 1048576:
        raise ConfigError("policy.max_body: 256 to 1048576 bytes")
    if p.request_timeout <= 0 or p.idle_timeout <= 0 or not 0 < p.lookup_timeout <= 10:
        raise ConfigError("policy timeouts: > 0 (lookup_timeout at most 10)")
