"""The verdict record: written in the background, summarised by ``saslnetauth report``.

The sending limits' deferrals and suspensions go to the same table
(:meth:`EventRecorder.note_sending`: ``service`` "sending", ``verdict`` "defer"
or "suspend", ``reason`` the limit), kept apart from the login verdicts.

Logins never wait for it: a decision is put on a bounded queue (dropped,
and counted, when the queue is full) and one writer thread inserts them in
batches; rows older than ``keep_days`` are pruned hourly. A database error
loses that batch (logged) and never affects a login.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from saslnetauth.errors import BackendError
from saslnetauth.logfmt import kv
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.addresses import client_key
from saslnetauth.policy.verdict import Decision, Reason
from saslnetauth.store.schema import auth_events
from saslnetauth.store.sql import SqlStore

__all__ = ["EventRecorder", "Report", "build_report"]

log = logging.getLogger("saslnetauth.record")

BATCH = 2000
#: The ``service`` of the sending limits' rows.
SENDING = "sending"
FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 3600.0


class EventRecorder:
    """Collect decisions in memory; one background thread inserts them every second.

    ``record`` only appends to a deque (no lock, no wake-up of the writer),
    so recording costs the login a few microseconds.
    """

    def __init__(self, store: SqlStore, *, keep_days: int = 30, queue_size: int = 10_000) -> None:
        self.store = store
        self.keep_days = keep_days
        self.queue_size = queue_size
        self.pending: deque[tuple[float, Decision, Login]] = deque()
        self.sending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.written = 0
        self._insert: tuple[str, tuple[str, ...] | None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saslnetauth-record", daemon=True)
        self._thread.start()

    def record(self, decision: Decision, login: Login) -> None:
        """Called for every decision (by the engine, from worker threads, and by the
        responder); never blocks. Both values are frozen: the writer thread converts
        them (off the login's path)."""
        if len(self.pending) >= self.queue_size:
            self.dropped += 1
            return
        self.pending.append((time.time(), decision, login))

    def note_sending(
        self, event: str, user: str, credential: str | None, client: str | None, limit: str
    ) -> None:
        """A sending deferral (``event`` "defer") or suspension ("suspend"); never blocks.
        ``credential``: an app password's label, None for the main password."""
        if len(self.sending) >= self.queue_size:
            self.dropped += 1
            return
        self.sending.append(
            {
                "ts": datetime.now(UTC),
                "user": user[:255],
                "rip": client[:64] if client else None,
                "service": SENDING,
                "verdict": event,
                "reason": limit[:32],
                "credentials_valid": True,
                "credential": credential[:64] if credential else None,
            }
        )

    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending and stop the writer."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        last_prune = 0.0
        while True:
            stopping = self._stop.wait(FLUSH_SECONDS)
            try:
                self.flush()
                if time.monotonic() - last_prune > PRUNE_SECONDS:
                    last_prune = time.monotonic()
                    self._prune()
            except Exception:  # the record must never stop for good
                log.exception("verdict record writer error")
            if stopping:
                return

    def flush(self) -> None:
        while self.pending:
            batch = []
            with contextlib.suppress(IndexError):
                for _ in range(BATCH):
                    batch.append(self.pending.popleft())
            if batch:
                self._write(batch)
        rows = []
        with contextlib.suppress(IndexError):
            while True:
                rows.append(self.sending.popleft())
        if rows:
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(auth_events.insert(), rows)
                self.written += len(rows)
            except SQLAlchemyError as exc:
                log.warning("%s", kv("verdict record lost", rows=len(rows), error=str(exc)[:200]))

    def _write(self, batch: list[tuple[float, Decision, Login]]) -> None:
        """One executemany on the driver connection (SQLAlchemy's per-row processing
        would cost the logins of this process several percent at full load)."""
        sql, order = self._insert_sql()
        sqlite = self.store.dialect == "sqlite"
        rows: list[Any] = []
        seconds: dict[int, str] = {}
        for t, d, login in batch:
            if sqlite:  # SQLAlchemy's SQLite DateTime text, so that reports read it back
                sec = int(t)
                if sec not in seconds:
                    seconds[sec] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
                ts: Any = f"{seconds[sec]}.{int((t - sec) * 1e6):06d}"
            else:
                ts = datetime.fromtimestamp(t, UTC)
            user, credential = d.user, d.credential
            values = {
                "ts": ts,
                "user": user[:255] if user else None,
                "rip": None if login.address is None else str(login.address),
                "service": login.service[:32] or None,
                "verdict": d.verdict.value,
                "reason": d.reason.value,
                "credentials_valid": bool(d.credentials_valid),
                "country": d.country,
                "asn": d.asn,
                "credential": credential[:64] if credential else None,
                "proxy": d.proxy[:64] if d.proxy else None,
            }
            rows.append(tuple(values[k] for k in order) if order else values)
        try:
            raw = self.store.engine.raw_connection()
        except SQLAlchemyError as exc:
            log.warning("%s", kv("verdict record lost", rows=len(batch), error=str(exc)[:200]))
            return
        try:
            cur = raw.cursor()
            try:
                if sqlite:  # WAL stays consistent; a crash may lose the last second of record
                    cur.execute("PRAGMA synchronous = NORMAL")
                cur.executemany(sql, rows)
            finally:
                cur.close()
            raw.commit()
            self.written += len(batch)
        except Exception as exc:  # the driver's own errors: lose the batch, never a login
            raw.invalidate()
            log.warning("%s", kv("verdict record lost", rows=len(batch), error=str(exc)[:200]))
        finally:
            raw.close()

    def _insert_sql(self) -> tuple[str, tuple[str, ...] | None]:
        """The INSERT compiled for this database, and the parameter order if positional."""
        if self._insert is None:
            compiled = _INSERT.compile(dialect=self.store.engine.dialect)
            positional = self.store.engine.dialect.positional
            self._insert = (
                compiled.string,
                tuple(compiled.positiontup or ()) if positional else None,
            )
        return self._insert

    def _prune(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.keep_days)
        try:
            with self.store.engine.begin() as conn:
                conn.execute(auth_events.delete().where(auth_events.c.ts < cutoff))
        except SQLAlchemyError as exc:
            log.warning("%s", kv("verdict record prune failed", error=str(exc)[:200]))


_COLUMNS = (
    "ts",
    "user",
    "rip",
    "service",
    "verdict",
    "reason",
    "credentials_valid",
    "country",
    "asn",
    "credential",
    "proxy",
)
_INSERT = auth_events.insert().values({name: sa.bindparam(name) for name in _COLUMNS})


@dataclass
class Report:
    since: datetime
    verdicts: Counter[str] = field(default_factory=Counter)
    failures_by_service: Counter[str] = field(default_factory=Counter)
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    denied_addresses: Counter[str] = field(default_factory=Counter)
    denied_networks: Counter[str] = field(default_factory=Counter)
    failures_by_country: Counter[str] = field(default_factory=Counter)
    failures_by_asn: Counter[int] = field(default_factory=Counter)
    #: (user, address, app password label or None) -> count, last, services
    stolen: dict[tuple[str, str, str | None], dict[str, Any]] = field(default_factory=dict)
    #: proxy -> verdict -> count (docs/webmail.md)
    by_proxy: dict[str, Counter[str]] = field(default_factory=dict)
    #: the sending limits' deferrals and suspensions, oldest first (docs/sending.md)
    deferrals: list[dict[str, object]] = field(default_factory=list)
    suspensions: list[dict[str, object]] = field(default_factory=list)

    def to_json(self, top: int) -> dict[str, object]:
        """The documented ``report --json`` shape."""
        return {
            "since": self.since.isoformat(),
            "verdicts": dict(self.verdicts),
            "failures_by_service": dict(self.failures_by_service.most_common()),
            "failures_by_reason": dict(self.failures_by_reason.most_common()),
            "top_denied_addresses": [
                {"address": a, "failures": n} for a, n in self.denied_addresses.most_common(top)
            ],
            "top_denied_networks": [
                {"network": a, "failures": n} for a, n in self.denied_networks.most_common(top)
            ],
            "failures_by_country": [
                {"country": c, "failures": n} for c, n in self.failures_by_country.most_common(top)
            ],
            "failures_by_asn": [
                {"asn": a, "failures": n} for a, n in self.failures_by_asn.most_common(top)
            ],
            "logins_by_proxy": {p: dict(c) for p, c in sorted(self.by_proxy.items())},
            "proxy_without_client_address": self.failures_by_reason[
                Reason.PROXY_WITHOUT_CLIENT_ADDRESS.value
            ],
            "stolen_credentials": sorted(
                (
                    {
                        "user": user,
                        "credential": credential,
                        "address": rip,
                        "count": v["count"],
                        "last": v["last"].isoformat(),
                        "services": sorted(v["services"]),
                    }
                    for (user, rip, credential), v in self.stolen.items()
                ),
                key=lambda d: (-int(str(d["count"])), str(d["user"])),
            ),
            "sending_deferrals": self.deferrals,
            "sending_suspensions": self.suspensions,
        }


def build_report(store: SqlStore, since: datetime) -> Report:
    """Summarise the verdict record since ``since`` (streamed, constant memory per key)."""
    rep = Report(since=since)
    cols = auth_events.c
    query = (
        sa.select(
            cols.ts,
            cols.user,
            cols.rip,
            cols.service,
            cols.verdict,
            cols.reason,
            cols.credentials_valid,
            cols.country,
            cols.asn,
            cols.credential,
            cols.proxy,
        )
        .where(cols.ts >= since)
        .order_by(cols.ts)
    )
    stolen_reasons = {Reason.NETWORK.value, Reason.NO_NETWORK_RULES.value}
    try:
        with store.engine.connect() as conn:
            for row in conn.execute(query):
                ts, user, rip, service, verdict, reason, valid, country, asn, label, px = row
                if service == SENDING:
                    _sending_row(rep, ts, user, rip, verdict, reason, label)
                    continue
                rep.verdicts[verdict] += 1
                if px:
                    rep.by_proxy.setdefault(px, Counter())[verdict] += 1
                if verdict != "fail":
                    continue
                rep.failures_by_service[service or "-"] += 1
                rep.failures_by_reason[reason] += 1
                if country:
                    rep.failures_by_country[country] += 1
                if asn:
                    rep.failures_by_asn[int(asn)] += 1
                if rip:
                    rep.denied_addresses[rip] += 1
                    net = client_key(rip, ipv4_prefix=24, ipv6_prefix=48)
                    if net:
                        rep.denied_networks[net] += 1
                if valid and reason in stolen_reasons:
                    entry = rep.stolen.setdefault(
                        (user or "?", rip or "-", label),
                        {"count": 0, "last": ts, "services": set()},
                    )
                    entry["count"] += 1
                    entry["last"] = max(entry["last"], ts)
                    entry["services"].add(service or "-")
    except SQLAlchemyError as exc:
        raise BackendError(f"cannot read the verdict record: {exc}") from None
    return rep


def _sending_row(
    rep: Report,
    ts: datetime,
    user: str | None,
    rip: str | None,
    verdict: str,
    reason: str,
    label: str | None,
) -> None:
    entry: dict[str, object] = {
        "time": ts.isoformat(),
        "user": user or "?",
        "credential": "main" if not label else f"app:{label}",
        "client": rip or "-",
        "limit": reason,
    }
    (rep.suspensions if verdict == "suspend" else rep.deferrals).append(entry)
