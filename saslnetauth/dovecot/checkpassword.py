"""``saslnetauth-checkpassword``: a Dovecot 2.3 checkpassword program.

Protocol (Dovecot ``src/auth/db-checkpassword.c``, ``checkpassword-reply.c``):
Dovecot runs ``PROGRAM [our args] REPLY-PROGRAM`` for every login and
writes ``user NUL password NUL timestamp NUL`` (at most 512 bytes) on fd 3.
The environment carries ``SERVICE``, ``TCPREMOTEIP``/``REMOTE_IP``,
``TCPLOCALIP``/``LOCAL_IP``, ``MASTER_USER``, ``AUTHORIZED``,
``CREDENTIALS_LOOKUP``. On success we set ``USER`` and exec the reply
program; exit 1 = wrong credentials, 3 = unknown user (lookups), 111 =
temporary failure. With ``AUTHORIZED=1`` (a userdb or password-less
lookup) no password is checked: an existing, enabled user gets
``AUTHORIZED=2`` and the reply program.

Fast path: ask the running ``saslnetauth serve`` over its socket (the same
Dovecot auth protocol), importing only the standard library, because this
program starts once per login; the server refuses an empty password (before
any verification) and answers every failure at its fixed deadline. Fallback
(nothing listens on the socket): decide in-process with the same engine,
failures at the same kind of deadline (:mod:`saslnetauth.policy.deadline`), or fail
temporarily (``[checkpassword] fallback``). A server that accepted the
connection but failed or did not answer within :data:`CLIENT_TIMEOUT` is a
temporary failure, never a local decision: its brakes must not be dodged.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # not imported from typing: this start-up path stays light
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import NoReturn, Protocol

    from saslnetauth.config import Config
    from saslnetauth.policy.engine import DecisionEngine

    class AppPasswordUse(Protocol):
        """Where an app password's last use is written (the store, whichever it is)."""

        def touch_app_passwords(self, used: Mapping[int, float]) -> None: ...


__all__ = ["main"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNKNOWN_USER = 3
EXIT_TEMPFAIL = 111
MAX_INPUT = 512
#: Seconds the fast path waits for the server (which answers within 9.5 s).
CLIENT_TIMEOUT = 10.0
DEFAULT_SOCKET = "/run/saslnetauth/auth-client"
DEFAULT_CONFIG = "/etc/saslnetauth/saslnetauth.toml"

USAGE = """\
usage: saslnetauth-checkpassword [--config FILE] [--database URL] [--socket ADDR]
                                 [--fallback local|tempfail] REPLY-PROGRAM [ARGS...]

A Dovecot 2.3 checkpassword program (passdb/userdb driver = checkpassword).
Dovecot appends REPLY-PROGRAM itself; configure e.g.
  passdb { driver = checkpassword
           args = /usr/local/bin/saslnetauth-checkpassword --socket /run/saslnetauth/auth-client }

Reads "user NUL password NUL timestamp NUL" from fd 3 (at most 512 bytes),
SERVICE and TCPREMOTEIP from the environment, and asks the running
`saslnetauth serve` at --socket (unix:/path, /path or inet:HOST:PORT;
default [checkpassword] socket of the config, else /run/saslnetauth/auth-client).
When nothing listens there, --fallback local (default) decides in-process
with the database, --fallback tempfail fails temporarily. A server that
accepts but then fails or does not answer within 10 s: temporary failure.

Exit status: execs REPLY-PROGRAM with USER set on success; 1 wrong
credentials or refused; 3 unknown user (lookups); 111 temporary failure.
"""


def _log(message: str) -> None:
    """One line on stderr: Dovecot copies it into its log (URL passwords masked)."""
    if "://" in message:
        from saslnetauth.logfmt import mask_url

        message = mask_url(message)
    text = "".join(c if c.isprintable() else "?" for c in message)
    try:  # noqa: SIM105 - contextlib is not imported on this hot path
        os.write(2, f"saslnetauth-checkpassword: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def _exit(code: int, message: str | None = None) -> NoReturn:
    if message:
        _log(message)
    os._exit(code)


class Options:
    __slots__ = ("config", "database", "fallback", "reply", "socket")

    def __init__(self) -> None:
        self.config: str | None = None
        self.database: str | None = None
        self.socket: str | None = None
        self.fallback: str | None = None
        self.reply: list[str] = []


def parse_args(argv: list[str]) -> Options:
    """Options come before the reply program, which Dovecot appends."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            # written past sys.stdout's buffer: _exit() leaves by os._exit, which
            # flushes nothing (a pipe got no help under Python 3.13)
            os.write(1, USAGE.encode())
            _exit(0)
        if arg == "--":
            i += 1
            break
        if not arg.startswith("--"):
            break
        key, eq, value = arg[2:].partition("=")
        if key not in ("config", "database", "socket", "fallback"):
            _exit(EXIT_TEMPFAIL, f"unknown option {arg} (see --help)")
        if not eq:
            i += 1
            if i >= len(argv):
                _exit(EXIT_TEMPFAIL, f"option --{key} needs a value")
            value = argv[i]
        setattr(opts, key, value)
        i += 1
    opts.reply = argv[i:]
    if opts.fallback not in (None, "local", "tempfail"):
        _exit(EXIT_TEMPFAIL, "--fallback must be local or tempfail")
    return opts


def read_fd3(fd: int = 3) -> tuple[bytes, bytes]:
    """``(user, password)`` from Dovecot's fd 3 input; exits on bad input."""
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_INPUT:
        try:
            chunk = os.read(fd, MAX_INPUT + 1 - total)
        except OSError as exc:
            _exit(EXIT_TEMPFAIL, f"cannot read fd {fd}: {exc.strerror}")
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    parsed = _split_input(b"".join(chunks))
    if isinstance(parsed, str):
        _exit(EXIT_FAIL, f"fd {fd}: {parsed}")
    return parsed


def parse_input(data: bytes) -> tuple[bytes, bytes]:
    """Split ``user NUL password NUL timestamp NUL`` (at most 512 bytes).

    Raises :class:`ProtocolError` for anything else.
    """
    parsed = _split_input(data)
    if isinstance(parsed, str):
        from saslnetauth.errors import ProtocolError

        raise ProtocolError(parsed)
    return parsed


def _split_input(data: bytes) -> tuple[bytes, bytes] | str:
    """``(user, password)``, or what is wrong with the input (no exception class is
    imported on the fast path)."""
    if len(data) > MAX_INPUT:
        return f"more than {MAX_INPUT} bytes of input"
    parts = data.split(b"\0")
    if len(parts) < 3 or not parts[0]:
        return "malformed input: expected user NUL password NUL timestamp NUL"
    return parts[0], parts[1]


def _exec_reply(reply: list[str], user: str, authorized: bool) -> NoReturn:
    if not reply:
        _exit(EXIT_TEMPFAIL, "no reply program given (Dovecot appends it)")
    if "\t" in user or not user:
        _exit(EXIT_TEMPFAIL, "refusing a user name with TAB")
    os.environ["USER"] = user
    if authorized:
        os.environ["AUTHORIZED"] = "2"
    try:
        os.execvp(reply[0], reply)  # noqa: S606 - checkpassword protocol: exec the reply program
    except OSError as exc:
        _exit(EXIT_TEMPFAIL, f"cannot run {reply[0]}: {exc.strerror}")


def main(argv: list[str] | None = None) -> NoReturn:
    arrival = time.monotonic()
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    env = os.environ
    user, password = read_fd3()
    service = env.get("SERVICE", "")
    rip = env.get("TCPREMOTEIP") or env.get("REMOTE_IP") or None
    lip = env.get("TCPLOCALIP") or env.get("LOCAL_IP") or None
    # proxies hook: Dovecot's connecting address when it forwarded another as the rip
    # (login_trusted_networks; docs/webmail.md)
    real_rip = env.get("AUTH_REAL_RIP") or env.get("AUTH_REAL_REMOTE_IP") or None
    lookup = env.get("AUTHORIZED") == "1"
    if env.get("CREDENTIALS_LOOKUP") == "1":
        _exit(EXIT_FAIL, "credentials lookups are not supported (use PLAIN/LOGIN)")
    if not _is_utf8(user):  # never a user of ours: answer like an unknown user
        _exit(EXIT_UNKNOWN_USER if lookup else EXIT_FAIL, "user name is not valid UTF-8")
    if env.get("MASTER_USER") and not _master_users_allowed(opts):
        _exit(EXIT_FAIL, f"master user login refused for {_safe(user)}")
    if lookup:
        _lookup(opts, user)
    socket_addr = opts.socket or _config_value(opts, "socket") or DEFAULT_SOCKET
    from saslnetauth.dovecot.client import (
        AuthClientError,
        AuthServerUnreachable,
        authenticate_plain,
    )

    try:
        reply = authenticate_plain(
            socket_addr,
            user,
            password,
            service=service,
            rip=rip,
            lip=lip,
            timeout=CLIENT_TIMEOUT,
            real_rip=real_rip,
        )
    except AuthServerUnreachable as exc:
        fallback = opts.fallback or _config_value(opts, "fallback") or "local"
        if fallback != "local":
            _exit(EXIT_TEMPFAIL, f"auth server unavailable ({exc}); fallback is tempfail")
        _local(opts, user, password, (rip, real_rip), service, arrival)
    except AuthClientError as exc:
        _exit(EXIT_TEMPFAIL, f"auth server failed ({exc}); not deciding locally")
    if reply.ok and reply.user:
        _exec_reply(opts.reply, reply.user, authorized=False)
    _exit(EXIT_TEMPFAIL if reply.temp else EXIT_FAIL)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _safe(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:64]


_CONFIG_CACHE: list[Config] = []


def _config(opts: Options) -> Config:
    """The full configuration (loaded only when the fast path needs a value)."""
    if not _CONFIG_CACHE:
        from saslnetauth.config import load_config
        from saslnetauth.errors import ConfigError

        try:
            _CONFIG_CACHE.append(load_config(opts.config, opts.database))
        except ConfigError as exc:
            _exit(EXIT_TEMPFAIL, f"configuration error: {exc}")
    return _CONFIG_CACHE[0]


def _config_value(opts: Options, key: str) -> str | None:
    if opts.config is None and not _any_default_config():
        return None
    value = getattr(_config(opts).checkpassword, key)
    return str(value) if value else None


def _any_default_config() -> bool:
    if os.environ.get("SASLNETAUTH_CONFIG"):
        return True
    return os.path.isfile(DEFAULT_CONFIG)  # never the current directory (config.py)


def _master_users_allowed(opts: Options) -> bool:
    if opts.config is None and not _any_default_config():
        return False
    return _config(opts).checkpassword.allow_master_user


def _engine(opts: Options) -> tuple[DecisionEngine, AppPasswordUse]:
    """The decision engine and the store it reads, which also writes app passwords' use."""
    from saslnetauth.errors import SaslNetAuthError
    from saslnetauth.runtime import make_engine, open_store, setup_logging

    cfg = _config(opts)
    setup_logging(cfg)
    try:
        store = open_store(cfg)
        return make_engine(cfg, store), store
    except SaslNetAuthError as exc:
        _exit(EXIT_TEMPFAIL, f"database unavailable: {exc}")


def _local(
    opts: Options,
    user: bytes,
    password: bytes,
    rips: tuple[str | None, str | None],
    service: str,
    arrival: float,
) -> NoReturn:
    """Decide in-process. The slowest verification is measured on a thread while
    the engine decides (only a failure waits for it): every failure exits at
    arrival + max(failure_delay, slowest verification), as the server answers."""
    import threading

    from saslnetauth.policy.deadline import FailureDeadline, sleep_until
    from saslnetauth.policy.login import Login
    from saslnetauth.policy.verdict import Verdict
    from saslnetauth.runtime import measure_verification

    engine, last_use = _engine(opts)
    cfg = _config(opts)
    measured: list[float] = []
    probe = threading.Thread(target=lambda: measured.append(measure_verification(cfg)), daemon=True)
    probe.start()
    name = user.decode("utf-8")  # checked in main()
    after_reply: list[Callable[[], None]] = []
    used: dict[int, float] = {}
    engine.on_app_password_used = lambda aid: used.__setitem__(aid, time.time())
    rip, real_rip = rips  # the client address, the connecting one (proxies hook)
    login = Login.of(name, password, rip, service, real_rip=real_rip, arrival=arrival)
    decision = engine.decide(login, log_fields={"via": "checkpassword"}, after_reply=after_reply)
    if decision.verdict is Verdict.OK:
        if used:  # an app password's last use, written now: exec replaces this process
            after_reply.append(lambda: _touch(last_use, used))
        for job in after_reply:  # rehash_on_login: exec replaces this process
            job()
        _exec_reply(opts.reply, decision.user, authorized=False)
    probe.join()
    deadline = FailureDeadline(cfg.serve.failure_delay, measured[0] if measured else 0.0)
    deadline.observe(decision.verify_seconds)
    sleep_until(deadline.at(arrival))
    _exit(EXIT_TEMPFAIL if decision.verdict is Verdict.TEMPFAIL else EXIT_FAIL)


def _touch(last_use: AppPasswordUse, used: dict[int, float]) -> None:
    try:
        last_use.touch_app_passwords(used)
    except Exception as exc:  # never fails the login
        _log(f"app password last use not written: {exc}")


def _lookup(opts: Options, user: bytes) -> NoReturn:
    """userdb (or password-less passdb) lookup: does an enabled user exist?"""
    from saslnetauth.errors import InvalidUsernameError, SaslNetAuthError

    engine, _ = _engine(opts)
    try:
        record = engine.store.get_user(user.decode("utf-8"))  # checked in main()
    except InvalidUsernameError:
        _exit(EXIT_UNKNOWN_USER)
    except SaslNetAuthError as exc:
        _exit(EXIT_TEMPFAIL, f"lookup failed: {exc}")
    if record is None or not record.enabled:
        _exit(EXIT_UNKNOWN_USER)
    _exec_reply(opts.reply, record.name, authorized=True)
