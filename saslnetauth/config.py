"""Configuration: a TOML file, environment variables and command-line options.

Precedence (highest first): command-line option, environment variable,
configuration file, built-in default. The file is ``--config FILE`` or
``$SASLNETAUTH_CONFIG`` when given (it must then exist), else the first of
``./saslnetauth.toml`` and ``/etc/saslnetauth/saslnetauth.toml`` that
exists, else none. Unknown keys are errors, so a typo never silently
leaves a default in place. Every key is documented in
``dovecot-examples/saslnetauth.toml`` and the README.
"""

from __future__ import annotations

import dataclasses
import os
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
DEFAULT_CONFIG_PATHS = (Path("saslnetauth.toml"), Path("/etc/saslnetauth/saslnetauth.toml"))
ENV_DATABASE = "SASLNETAUTH_DATABASE_URL"
ENV_CONFIG = "SASLNETAUTH_CONFIG"


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
    #: Seconds to wait before answering a failure (0 allowed; well under Postfix's 10 s).
    failure_delay: float = 2.0
    #: reason= text of every FAIL, whatever the cause ("" = send none, like Dovecot).
    fail_reason: str = "Authentication failed"
    #: Permissions, owner and group of UNIX sockets we create.
    socket_mode: str = "0660"
    socket_owner: str = ""
    socket_group: str = ""
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
    #: Seconds a login may wait for and take in a decision worker before it fails
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
    idle_timeout: float = 0.0
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
    #: Also brake failures per user, but only those from outside the user's own
    #: networks (so it can never lock the real user out of an allowed network).
    user_penalty: bool = False
    #: Command run when a correct password comes from a forbidden network (likely
    #: stolen credentials), e.g. ["/usr/local/bin/alert-admin"]. Gets SASLNETAUTH_USER,
    #: SASLNETAUTH_RIP, SASLNETAUTH_SERVICE; never the password. [] = none.
    alert_command: list[str] = field(default_factory=list)
    #: Seconds before the alert command is killed.
    alert_timeout: float = 10.0
    #: Serve Prometheus metrics at http://ADDR/metrics: inet:HOST:PORT or unix:/path
    #: ("" = off). Keep it on loopback or a management network.
    metrics_listen: str = ""


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
    #: Seconds a cached copy of the global networks is trusted before re-checking.
    global_cache_seconds: float = 1.0
    passwords: PasswordsConfig = field(default_factory=PasswordsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    checkpassword: CheckpasswordConfig = field(default_factory=CheckpasswordConfig)
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


def load_config(
    path: str | os.PathLike[str] | None = None, database_url: str | None = None
) -> Config:
    """Load the configuration, applying the precedence rules above."""
    cfg = Config()
    source = find_config(path)
    if source is not None:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
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


def validate(cfg: Config) -> None:
    """Range checks that types alone do not catch."""
    s = cfg.serve
    if len(s.fail_reason) > 200 or not s.fail_reason.isprintable() or "\t" in s.fail_reason:
        raise ConfigError("serve.fail_reason: printable text of at most 200 characters")
    if not 0 <= s.failure_delay <= 8:
        raise ConfigError("serve.failure_delay: must be between 0 and 8 seconds (Postfix waits 10)")
    if s.penalty_max < 0 or s.penalty_base <= 0 or s.penalty_free_failures < 0:
        raise ConfigError("serve.penalty_*: penalty_base > 0, penalty_max and free failures >= 0")
    if s.failure_delay + s.penalty_max > 8:
        raise ConfigError(
            "serve.failure_delay + serve.penalty_max must stay at most 8 seconds "
            "(Postfix gives up after 10)"
        )
    if not 1 <= s.penalty_ipv6_prefix <= 128 or s.penalty_max_entries < 1:
        raise ConfigError("serve.penalty_ipv6_prefix: 1..128; penalty_max_entries >= 1")
    if s.alert_timeout <= 0:
        raise ConfigError("serve.alert_timeout: must be > 0")
    for name in ("max_pending", "max_requests_per_connection", "max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"serve.{name}: must be at least 1")
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
    if cfg.checkpassword.fallback not in ("local", "tempfail"):
        raise ConfigError("checkpassword.fallback: use local or tempfail")
    if cfg.logging.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("logging.level: use debug, info, warning or error")
    if cfg.database_timeout <= 0 or cfg.global_cache_seconds < 0:
        raise ConfigError("database_timeout must be > 0 and global_cache_seconds >= 0")
