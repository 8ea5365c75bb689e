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
``dovecot-examples/saslnetauth.toml`` and docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from saslnetauth.errors import ConfigError
from saslnetauth.settings import Config, GeoipConfig, PolicyConfig, RevokeConfig, ServeConfig

# The schema's classes live in saslnetauth.settings; Config is re-exported for the
# many modules that only need the type next to load_config.
__all__ = ["DEFAULT_CONFIG_PATHS", "Config", "check_policy_secret", "load_config", "validate"]

DEFAULT_CONFIG_PATHS = (Path("/etc/saslnetauth/saslnetauth.toml"),)
ENV_DATABASE = "SASLNETAUTH_DATABASE_URL"
ENV_CONFIG = "SASLNETAUTH_CONFIG"


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
    _validate_serve_limits(cfg.serve)
    _validate_serve_peers(cfg.serve)
    _validate_serve_sockets(cfg.serve)
    _validate_edges(cfg)
    if cfg.report.keep_days < 1 or cfg.report.queue_size < 1:
        raise ConfigError("report.keep_days and report.queue_size: at least 1")
    if not cfg.pam.service or "/" in cfg.pam.service:
        raise ConfigError("pam.service: a PAM service name such as saslnetauth")
    _validate_policy(cfg.policy)
    if cfg.checkpassword.fallback not in ("local", "tempfail"):
        raise ConfigError("checkpassword.fallback: use local or tempfail")
    _validate_geoip(cfg.geoip)
    _validate_revoke(cfg.revoke)
    _validate_alerts(cfg)
    if not 0 <= cfg.alerts.retired_days <= 3650:
        raise ConfigError("alerts.retired_days: 0 (keep no retired password) to 3650")
    if cfg.logging.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("logging.level: use debug, info, warning or error")
    if cfg.database_timeout <= 0 or cfg.global_cache_seconds < 0:
        raise ConfigError("database_timeout must be > 0 and global_cache_seconds >= 0")


def _validate_serve_limits(s: ServeConfig) -> None:
    """[serve]: the failure reply, the brakes, the time and connection limits."""
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


def _validate_serve_peers(s: ServeConfig) -> None:
    """[serve]: who may connect, and the decision workers."""
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


def _validate_serve_sockets(s: ServeConfig) -> None:
    """[serve]: the metrics token, the sockets, the expired grants kept."""
    if s.metrics_token and (
        len(s.metrics_token) < MIN_POLICY_SECRET
        or not s.metrics_token.isascii()
        or not s.metrics_token.isprintable()
        or " " in s.metrics_token
    ):
        raise ConfigError(
            f"serve.metrics_token: at least {MIN_POLICY_SECRET} printable ASCII characters "
            'without spaces (e.g. from `openssl rand -hex 32`), or "" for none'
        )
    if s.userdb_listen and not s.userdb_listen.startswith("unix:"):
        raise ConfigError("serve.userdb_listen: a UNIX socket, unix:/path (answers user lookups)")
    try:
        mode = int(s.socket_mode, 8)
    except ValueError:
        raise ConfigError(f"serve.socket_mode: {s.socket_mode!r} is not an octal mode") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"serve.socket_mode: {s.socket_mode!r} out of range")
    if s.expired_keep_days < 0:
        raise ConfigError("serve.expired_keep_days: 0 or more days")


def _validate_alerts(cfg: Config) -> None:
    from saslnetauth.policy.mainpassword import parse_main_services

    try:
        parse_main_services(cfg.passwords.main_password_services)
    except ValueError as exc:
        raise ConfigError(f"passwords.main_password_services: {exc}") from None
    a = cfg.alerts
    if not 1 <= a.location_memory_days <= 3650:
        raise ConfigError("alerts.location_memory_days: 1 to 3650 days")
    if not 1 <= a.location_max_per_user <= 10000:
        raise ConfigError("alerts.location_max_per_user: 1 to 10000")


def _validate_geoip(g: GeoipConfig) -> None:
    for key in ("country_db", "asn_db"):
        value = getattr(g, key)
        if value and (not os.path.isabs(value) or not value.isprintable()):
            raise ConfigError(f'geoip.{key}: an absolute path to a .mmdb file, or ""')
    if g.max_age_days < 0:
        raise ConfigError("geoip.max_age_days: 0 (never old) or more")
    if not 0.1 <= g.check_seconds <= 86400:
        raise ConfigError("geoip.check_seconds: 0.1 to 86400 seconds")


#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Fewest characters of the policy endpoint's secret (`openssl rand -hex 32` gives 64).
MIN_POLICY_SECRET = 16
_GENERATE = (
    'set [policy] api_header = "X-API-Key: SECRET" with a secret from `openssl rand -hex 32` '
    "and the same line as auth_policy_server_api_header in Dovecot's "
    'auth-policy-saslnetauth.conf.ext (docs/dovecot.md, "Policy endpoint")'
)


def check_policy_secret(cfg: Config) -> None:
    """A policy listener answers only who holds the shared secret (``[policy]
    api_header``); without one any local user could forge Dovecot's reports (ban and
    slow anyone) and ask ``allow`` (enumerate users and their networks). ``serve``
    calls this before it starts; a file any local user can read holds no secret
    (neither the policy's nor ``[serve] metrics_token``)."""
    p = cfg.policy
    if cfg.serve.metrics_token:
        _check_private(cfg, "serve.metrics_token")
    if not p.listen:
        return
    secret = p.api_header.partition(":")[2].strip()
    if not secret:
        raise ConfigError(f"policy.api_header: required with policy.listen: {_GENERATE}")
    if len(secret) < MIN_POLICY_SECRET or "CHANGE-ME" in secret.upper():
        raise ConfigError(
            f"policy.api_header: the secret must have at least {MIN_POLICY_SECRET} "
            f"characters and not be the example's placeholder: {_GENERATE}"
        )
    _check_private(cfg, "policy.api_header")


def _check_private(cfg: Config, key: str) -> None:
    """The file that holds the secret ``key`` must not be readable by every local user."""
    if cfg.source is None:
        return
    mode = stat.S_IMODE(os.stat(cfg.source).st_mode)
    if mode & 0o004:
        raise ConfigError(
            f"{key}: {cfg.source} is readable by every local user (mode "
            f"{mode:04o}), so its secret protects nothing; run chmod o-r {cfg.source}"
        )


def _validate_revoke(r: RevokeConfig) -> None:
    if any(not arg.isprintable() for arg in r.command):
        raise ConfigError("revoke.command: printable arguments only")
    if r.command and not r.command[0]:
        raise ConfigError("revoke.command: the first argument is the program")
    if any(not 0 <= status <= 255 for status in r.ok_status):
        raise ConfigError("revoke.ok_status: exit statuses, 0 to 255")
    if not 0 < r.timeout <= 300:
        raise ConfigError("revoke.timeout: more than 0, at most 300 seconds")
    if not 0.1 <= r.check_seconds <= 3600:
        raise ConfigError("revoke.check_seconds: 0.1 to 3600 seconds")
    if r.max_running < 1 or r.max_queued < 0:
        raise ConfigError("revoke.max_running: at least 1; revoke.max_queued: 0 or more")


def _validate_policy(p: PolicyConfig) -> None:
    import ipaddress

    if p.mode not in ("before_auth", "after_auth"):
        raise ConfigError("policy.mode: use before_auth or after_auth")
    if p.unknown_users not in ("global", "reject"):
        raise ConfigError("policy.unknown_users: use global or reject")
    if len(p.reject_message) > 200 or not p.reject_message.isprintable():
        raise ConfigError("policy.reject_message: printable text of at most 200 characters")
    if p.api_header:
        name, colon, value = p.api_header.partition(":")
        if not colon or not value.strip() or not _HEADER_NAME.fullmatch(name.strip()):
            raise ConfigError('policy.api_header: "Name: value" (e.g. "X-API-Key: SECRET")')
        if not value.strip().isascii() or not value.strip().isprintable():
            raise ConfigError("policy.api_header: the value must be printable ASCII")
    for net in p.allow_from:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"policy.allow_from: {net!r} is not a network") from None
    if not 256 <= p.max_body <= 1048576:
        raise ConfigError("policy.max_body: 256 to 1048576 bytes")
    if p.request_timeout <= 0 or p.idle_timeout <= 0 or not 0 < p.lookup_timeout <= 10:
        raise ConfigError("policy timeouts: > 0 (lookup_timeout at most 10)")
    if not 0 < p.first_byte_timeout <= 60:
        raise ConfigError("policy.first_byte_timeout: more than 0, at most 60 seconds")
    if p.max_connections < 1 or not 0 <= p.max_connections_per_peer <= p.max_connections:
        raise ConfigError(
            "policy.max_connections: at least 1; max_connections_per_peer: 0 (automatic) "
            "up to max_connections"
        )


def _validate_edges(cfg: Config) -> None:
    """[proxies] (every entry parses, a sane session), [sending] and [state]."""
    from saslnetauth.policy.proxies import ProxyNetworks
    from saslnetauth.sending.checks import validate_sending

    ProxyNetworks.parse(cfg.proxies.networks)
    if not 0 <= cfg.proxies.session_seconds <= 7 * 86400:
        raise ConfigError("proxies.session_seconds: 0 (no sessions) up to 604800 (a week)")
    validate_sending(cfg.sending, cfg.state)
