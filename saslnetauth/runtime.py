"""Wiring: build the store, hasher and engine from a :class:`Config`; set up logging."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from saslnetauth.config import Config
from saslnetauth.errors import SchemaOutdatedError
from saslnetauth.store import SqlStore, sqlite_path

if TYPE_CHECKING:  # imported where used: `user show` needs neither the hashes nor the engine
    from saslnetauth.credentials.passwords import PasswordHasher
    from saslnetauth.policy.engine import DecisionEngine

LOG_FORMAT = "%(asctime)s saslnetauth[%(process)d]: %(levelname)s %(message)s"


class _Formatter(logging.Formatter):
    """The standard formatter, formatting the time once per second (one log line per
    login makes strftime show up in profiles)."""

    _last: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if self._last[0] != second:
            self._last = (second, super().formatTime(record, datefmt))
        return self._last[1]


def make_hasher(cfg: Config) -> PasswordHasher:
    from saslnetauth.credentials.passwords import PasswordHasher

    p = cfg.passwords
    return PasswordHasher(
        p.default_scheme,
        argon2_memory_kib=p.argon2_memory_kib,
        argon2_time_cost=p.argon2_time_cost,
        argon2_parallelism=p.argon2_parallelism,
        bcrypt_cost=p.bcrypt_cost,
        sha_crypt_rounds=p.sha_crypt_rounds,
    )


def measure_verification(cfg: Config) -> float:
    """Seconds of the slowest verification at the configured costs (for the
    failure deadline, :mod:`saslnetauth.policy.deadline`)."""
    from saslnetauth.policy.deadline import calibrate

    return calibrate(make_hasher(cfg))


def open_store(cfg: Config, *, check_schema: bool = True, create: bool = False) -> SqlStore:
    """Open the configured database.

    A missing SQLite file is an error (never silently created) unless
    ``create`` is set, in which case its directory is created too.
    """
    path = sqlite_path(cfg.database_url)
    if path is not None:
        if create:
            secure_sqlite_file(path)
        elif not path.exists():
            raise SchemaOutdatedError(f"database file {path} does not exist; run: saslnetauth init")
    store = SqlStore(
        cfg.database_url,
        lowercase_usernames=cfg.lowercase_usernames,
        cache_seconds=cfg.global_cache_seconds,
        busy_timeout=cfg.database_timeout,
    )
    if check_schema:
        try:
            store.check_schema()
        except Exception:
            store.close()
            raise
    return store


#: Mode of a new SQLite database: the file holds every password hash. SQLite gives
#: its -wal and -shm files the mode of the database file.
SQLITE_FILE_MODE = 0o600
#: Permission bits an existing database file may keep (owner, group read).
SQLITE_ALLOWED_BITS = 0o640


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def secure_sqlite_file(path: Path) -> list[str]:
    """Create the SQLite database file 0600 if missing (never through a symbolic
    link), and take away what others (and the group, except reading) may do with
    it and its -wal/-shm files. Returns what was done, for ``init``'s output."""
    notes: list[str] = []
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE)
        os.close(fd)
        created = True
    except FileExistsError:
        created = False
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            fd = os.open(name, flags)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode) and mode & ~SQLITE_ALLOWED_BITS:
                os.fchmod(fd, mode & SQLITE_ALLOWED_BITS)
                notes.append(
                    f"mode of {name} tightened from {mode:04o} to "
                    f"{mode & SQLITE_ALLOWED_BITS:04o}: it holds password hashes"
                )
                st = os.fstat(fd)
            if name == path:
                notes.append(
                    f"database file {path}{' created' if created else ''}: mode "
                    f"{stat.S_IMODE(st.st_mode):04o}, owner {_owner(st)} (it holds the password "
                    "hashes; the service user must own it: systemd's StateDirectory= does that)"
                )
        finally:
            os.close(fd)
    return notes


def make_engine(cfg: Config, store: SqlStore, *, watch_geoip: bool = False) -> DecisionEngine:
    """The decision engine on ``store``; ``watch_geoip``: a long-running process, whose
    GeoIP databases are reopened when replaced (:mod:`saslnetauth.policy.rules.geoip`)."""
    from saslnetauth.policy.engine import DecisionEngine
    from saslnetauth.policy.mainpassword import parse_main_services
    from saslnetauth.policy.rules.geoip import GeoLocator

    pam = None
    if cfg.pam.enabled:
        from saslnetauth.credentials.pam import PamAuth

        pam = PamAuth(cfg.pam.service)
    geoip = GeoLocator(cfg.geoip, watch=watch_geoip)
    engine = DecisionEngine(
        store,
        make_hasher(cfg),
        lowercase_usernames=cfg.lowercase_usernames,
        rehash_on_login=cfg.passwords.rehash_on_login,
        pam=pam,
        pam_any_user=cfg.pam.any_user,
        geoip=geoip,
        main_password_services=parse_main_services(cfg.passwords.main_password_services),
    )
    engine.closers.append(geoip.close)
    attach_proxies(cfg, engine, store)
    return engine


def attach_proxies(cfg: Config, engine: DecisionEngine, store: SqlStore) -> None:
    """[proxies] on ``engine``: the proxy networks, and the webmail sessions in the
    database (docs/webmail.md)."""
    from saslnetauth.policy.binding import SessionBinder
    from saslnetauth.policy.proxies import ProxyNetworks
    from saslnetauth.store.webmail import WebmailSessions

    engine.proxies = ProxyNetworks.parse(cfg.proxies.networks)
    if engine.proxies and cfg.proxies.session_seconds > 0:
        seconds = cfg.proxies.session_seconds
        engine.binder = SessionBinder(WebmailSessions(store), seconds, engine.clock)


def build_server_engine(cfg: Config) -> DecisionEngine:
    """The engine of a long-running server: store, verdict record, the app passwords'
    last use, closers.

    The schema was checked by ``saslnetauth serve`` before it started its
    workers. A database that is down is logged and tolerated (logins fail
    temporarily until it answers).
    """
    import logging as _logging

    from saslnetauth.errors import BackendError
    from saslnetauth.logfmt import kv

    try:
        store = open_store(cfg, check_schema=False)
    except BackendError as exc:
        _logging.getLogger("saslnetauth.serve.server").error(
            "%s", kv("database unavailable at start", error=str(exc))
        )
        store = open_store(cfg, check_schema=False)
    engine = make_engine(cfg, store, watch_geoip=True)
    engine.retired_days = cfg.alerts.retired_days
    engine.closers.append(store.close)
    from saslnetauth.store.lastused import LastUsedRecorder

    last_used = LastUsedRecorder(store)
    engine.on_app_password_used = last_used.touch
    engine.closers.append(last_used.close)
    from saslnetauth.store.locations import LocationMemory, enabled_kinds

    kinds = enabled_kinds(cfg.alerts)
    if kinds:
        geoip = engine.geoip
        places = LocationMemory(
            store,
            kinds,
            memory_days=cfg.alerts.location_memory_days,
            max_per_user=cfg.alerts.location_max_per_user,
            locate=geoip.geo if geoip is not None and geoip.configured else None,
        )
        engine.note_place = places.note
        engine.closers.append(places.close)
    if cfg.report.record:
        from saslnetauth.store.events import EventRecorder

        recorder = EventRecorder(
            store, keep_days=cfg.report.keep_days, queue_size=cfg.report.queue_size
        )
        engine.on_decision = recorder.record
        engine.closers.append(recorder.close)
    return engine


def setup_logging(cfg: Config, stream: TextIO | None = None, level: str | None = None) -> None:
    """Log to standard error (and to ``logging.file`` when set)."""
    root = logging.getLogger("saslnetauth")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = _Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z")
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if cfg.logging.file:
        handlers.append(logging.FileHandler(cfg.logging.file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel((level or cfg.logging.level).upper())
    root.propagate = False
    # LOG_FORMAT names none of the caller's file and line, the thread or the
    # multiprocessing name: not collecting them saves about 4 us of 9 per line (the
    # logging HOWTO's "Optimization"); the lines are the same
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
