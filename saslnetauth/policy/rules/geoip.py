"""Where a client address is: country and autonomous system from GeoIP databases.

The databases are files in MaxMind's DB format (``.mmdb``): GeoLite2-Country
and GeoLite2-ASN, or DB-IP's free "lite" files, which use the same record
layout (``country.iso_code``, ``autonomous_system_number``). They are read
with MaxMind's ``maxminddb`` reader (its C extension memory-maps the file:
a lookup is a few microseconds and no I/O), paths in ``[geoip] country_db``
and ``asn_db``.

Updaters replace a database by renaming a new file into place
(``geoipupdate`` does). A :class:`GeoLocator` started with ``watch=True``
checks the files every ``[geoip] check_seconds`` on a thread of its own
(device, inode, modification time, size); a replaced file is opened there,
then swapped in, so no login waits for it. A file rewritten in place rather
than renamed is reloaded too, and logged: an updater must not do that to a
mapped file.

Fail closed (docs/design.md, point 3): a database that is not configured,
missing, unreadable or not a MaxMind DB, and an address that a database
does not know, give an unknown :class:`~saslnetauth.policy.rules.netrules.Geo`, which no
country or ASN term matches. Each database's state is logged when it
changes (once, not at every login), ``saslnetauth check`` and ``saslnetauth
geoip status`` explain it, and the server counts failed logins by what the
databases knew of their address (``saslnetauth_failures_located_total``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from saslnetauth.logfmt import kv
from saslnetauth.policy.rules.addresses import Address
from saslnetauth.policy.rules.netterms import COUNTRY_CODES, MAX_ASN, Geo
from saslnetauth.settings import GeoipConfig

__all__ = [
    "FOUND",
    "KINDS",
    "UNAVAILABLE",
    "UNKNOWN",
    "DatabaseState",
    "GeoDatabase",
    "GeoLocator",
]

log = logging.getLogger("saslnetauth.geoip")

#: The databases, by the key of their path in ``[geoip]``.
KINDS = ("country", "asn")
#: What a lookup found, worst first wins: every configured database knew the address,
#: some database did not know it, some database was not loaded.
FOUND = "found"
UNKNOWN = "unknown"
UNAVAILABLE = "unavailable"
_NOT_LOCATED = Geo()


@dataclass(frozen=True)
class DatabaseState:
    """One database as it stands, for ``check``, ``geoip status`` and the metrics."""

    kind: str
    path: str
    loaded: bool
    error: str | None = None
    database_type: str | None = None
    build_epoch: int | None = None
    loaded_at: float | None = None

    def age_days(self, now: float | None = None) -> float | None:
        if self.build_epoch is None:
            return None
        return ((now if now is not None else time.time()) - self.build_epoch) / 86400

    def built(self) -> str:
        if self.build_epoch is None:
            return "-"
        return datetime.fromtimestamp(self.build_epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")

    def describe(self) -> str:
        """One line for people."""
        if not self.path:
            return f"{self.kind} database: not configured ([geoip] {self.kind}_db)"
        if not self.loaded:
            return f"{self.kind} database {self.path}: NOT LOADED ({self.error})"
        return f"{self.kind} database {self.path}: {self.database_type}, built {self.built()}"


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class GeoDatabase:
    """One ``.mmdb`` file and its reader; :meth:`refresh` reopens it when replaced."""

    def __init__(self, kind: str, path: str, max_age_days: int = 0) -> None:
        self.kind = kind
        self.path = path
        self.max_age_days = max_age_days
        #: The open reader (None: not loaded); read without a lock, swapped whole.
        self.reader: Any = None
        self.state = DatabaseState(kind, path, False, "not loaded yet")
        self._identity: tuple[int, int, int, int] | None = None
        self._logged: str | None = None

    def refresh(self) -> bool:
        """Open the file again if it is not the one loaded; True when the state changed."""
        if not self.path:
            return False
        try:
            identity = _identity(os.stat(self.path))
        except OSError as exc:
            return self._fail(f"cannot read it: {exc.strerror or exc}", None)
        if identity == self._identity:
            return False
        old = self._identity
        if old is not None and old[:2] == identity[:2] and self.reader is not None:
            log.warning(
                "%s",
                kv(
                    "geoip database changed in place; replace it by renaming a new file "
                    "into place (a mapped file rewritten in place can crash its readers)",
                    database=self.kind,
                    path=self.path,
                ),
            )
        try:
            reader, meta = _open(self.path)
        except Exception as exc:  # any reader error: not loaded, fail closed
            return self._fail(f"not a usable MaxMind DB file: {exc}", identity)
        with contextlib.suppress(OSError):
            if _identity(os.stat(self.path)) != identity:
                identity = (0, 0, 0, 0)  # replaced while we opened it: opened again next time
        self.reader, self._identity = reader, identity
        self.state = DatabaseState(
            self.kind,
            self.path,
            True,
            None,
            str(meta.database_type),
            int(meta.build_epoch),
            time.time(),
        )
        self._log_loaded()
        return True

    def _fail(self, error: str, identity: tuple[int, int, int, int] | None) -> bool:
        self._identity = identity
        changed = self.reader is not None or self.state.error != error
        # the old reader stays alive for lookups under way; no new lookup gets it
        self.reader = None
        self.state = DatabaseState(self.kind, self.path, False, error)
        if self._logged != error:
            self._logged = error
            log.error(
                "%s",
                kv(
                    "geoip database unavailable",
                    database=self.kind,
                    path=self.path,
                    error=error,
                    effect=f"{self.kind} terms match nothing",
                ),
            )
        return changed

    def _log_loaded(self) -> None:
        st = self.state
        self._logged = None
        log.info(
            "%s",
            kv(
                "geoip database loaded",
                database=self.kind,
                path=self.path,
                type=st.database_type,
                built=st.built(),
            ),
        )
        age = st.age_days()
        if self.max_age_days and age is not None and age > self.max_age_days:
            log.warning(
                "%s",
                kv(
                    "geoip database is old (update it)",
                    database=self.kind,
                    path=self.path,
                    age_days=int(age),
                    max_age_days=self.max_age_days,
                ),
            )

    def record(self, ip: IPv4Address | IPv6Address) -> tuple[Any, bool]:
        """(the database's record for ``ip`` or None, whether the database was loaded)."""
        reader = self.reader
        if reader is None:
            return None, False
        try:
            return reader.get(ip), True
        except ValueError:  # an IPv6 address in an IPv4-only database: not known there
            return None, True
        except Exception as exc:  # a corrupt file: unknown, and logged once
            if self._logged != repr(exc):
                self._logged = repr(exc)
                log.error(
                    "%s",
                    kv("geoip lookup failed", database=self.kind, path=self.path, error=repr(exc)),
                )
            return None, True


def _open(path: str) -> tuple[Any, Any]:
    """A reader of ``path`` (the C extension when installed) and its metadata."""
    import maxminddb

    reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    try:
        meta = reader.metadata()
    except Exception:
        reader.close()
        raise
    return reader, meta


def country_of(record: Any) -> str | None:
    """``country.iso_code`` of a GeoLite2 / DB-IP record, upper case; None if absent
    or not a country code."""
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else None
    if isinstance(code, str):
        code = code.upper()
        if code in COUNTRY_CODES:
            return code
    return None


def asn_of(record: Any) -> int | None:
    """``autonomous_system_number`` of a GeoLite2 / DB-IP ASN record; None if absent."""
    if not isinstance(record, dict):
        return None
    asn = record.get("autonomous_system_number")
    if isinstance(asn, int) and not isinstance(asn, bool) and 0 < asn <= MAX_ASN:
        return asn
    return None


class GeoLocator:
    """The configured databases of one process; :meth:`locate` is safe from any thread.

    ``watch=True`` (servers): a thread reopens replaced files every
    ``check_seconds``. ``watch=False`` (one-shot commands): the files are opened
    once, here.
    """

    def __init__(self, cfg: GeoipConfig, *, watch: bool = False) -> None:
        self.check_seconds = cfg.check_seconds
        self.databases = {
            "country": GeoDatabase("country", cfg.country_db, cfg.max_age_days),
            "asn": GeoDatabase("asn", cfg.asn_db, cfg.max_age_days),
        }
        self._country = self.databases["country"]
        self._asn = self.databases["asn"]
        #: Some database is configured (otherwise no lookup is ever worth making).
        self.configured = bool(cfg.country_db or cfg.asn_db)
        self._warned_unconfigured = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if watch and self.configured:
            self._thread = threading.Thread(
                target=self._watch, name="saslnetauth-geoip", daemon=True
            )
            self._thread.start()

    def refresh(self) -> bool:
        """Check every file now; True when a database was (re)loaded or lost."""
        changed = False
        for db in self.databases.values():
            changed = db.refresh() or changed
        return changed

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self.refresh()
            except Exception:  # the watcher must never stop for good
                log.exception("geoip database check failed")

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def states(self) -> list[DatabaseState]:
        return [db.state for db in self.databases.values()]

    def geo(self, addr: Address) -> Geo:
        """Where ``addr`` is (what :func:`saslnetauth.policy.rules.netrules.merged_match` calls)."""
        return self.locate(addr)[0]

    def locate(self, addr: Address) -> tuple[Geo, str]:
        """Where ``addr`` is, and :data:`FOUND`, :data:`UNKNOWN` or :data:`UNAVAILABLE`
        (over the configured databases). IPv4-mapped IPv6 addresses arrive as IPv4
        (:func:`saslnetauth.policy.rules.netrules.parse_address`)."""
        if not self.configured:
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                log.warning(
                    "%s",
                    kv(
                        "country or ASN terms apply but no [geoip] database is configured "
                        "(they match nothing)"
                    ),
                )
            return _NOT_LOCATED, UNAVAILABLE
        ip = IPv4Address(addr.value) if addr.version == 4 else IPv6Address(addr.value)
        status = FOUND
        country = asn = None
        if self._country.path:
            record, loaded = self._country.record(ip)
            country = country_of(record)
            status = UNAVAILABLE if not loaded else FOUND if country is not None else UNKNOWN
        if self._asn.path:
            record, loaded = self._asn.record(ip)
            asn = asn_of(record)
            if not loaded:
                status = UNAVAILABLE
            elif asn is None and status == FOUND:
                status = UNKNOWN
        return Geo(country, asn), status
