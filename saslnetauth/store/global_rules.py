"""The global networks, cached per process and never used stale.

A process (each worker of ``saslnetauth serve``, a checkpassword run, a
CLI command) keeps one parsed copy of ``global_networks``. The rule:

* a copy confirmed by the database less than ``global_cache_seconds`` ago
  is used as it is;
* otherwise, before the login is decided, the database is asked for the
  rules' version: the ``rules_generation`` counter, which database triggers
  bump inside every transaction that changes ``global_networks`` (whoever
  writes: saslnetauth, an import, an admin script), and
  ``MAX(global_networks.id)``, which also moves on a MariaDB TRUNCATE (that
  fires no trigger). One query, two primary-key lookups. When the version
  moved, the rows are re-read (version first, rows second: the copy is
  never older than the version it is filed under);
* if that check or the reload fails, the login gets :class:`BackendError`
  (TEMPFAIL): a copy is never used once it is older than
  ``global_cache_seconds`` without a successful check. There is no grace
  period; the next login tries again.

So a login that starts more than ``global_cache_seconds`` after a change
was committed is decided on rules that include it: the copy it uses was
confirmed by a query that started after the commit.

A row that fails to parse, for any reason, is skipped and logged once (its
parse result is remembered by content across reloads): it can only narrow
access and never stops later changes from being seen.

Expiring rows: passing time changes no version, so the copy keeps rows that
expire while it is used. It never serves them: the copy is a
:class:`~saslnetauth.policy.rules.netrules.RuleSet`, and every match goes through
:meth:`RuleSet.at` with the engine's clock, which leaves out the rows whose
``expires_at`` has passed (filtered once when the earliest one passes, not
at every login).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import sqlalchemy as sa

from saslnetauth.errors import BackendError
from saslnetauth.logfmt import kv
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet
from saslnetauth.store.connect import Database
from saslnetauth.store.rows import GLOBAL_RULE_ROWS, parse_rule
from saslnetauth.store.schema import GENERATION_ROW, global_networks, rules_generation

log = logging.getLogger("saslnetauth.store")

#: The version of the global networks: (generation counter, highest row id).
VERSION_QUERY = sa.select(
    sa.select(rules_generation.c.generation)
    .where(rules_generation.c.id == sa.literal_column(str(GENERATION_ROW)))  # no parameters
    .scalar_subquery(),
    sa.select(sa.func.max(global_networks.c.id)).scalar_subquery(),
)


class _Copy(NamedTuple):
    """A parsed copy with the time (monotonic) its last successful check started."""

    rules: RuleSet
    version: tuple[Any, Any]
    confirmed: float


class GlobalRules:
    """The global networks of one process; thread-safe."""

    def __init__(
        self,
        db: Database,
        cache_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        #: Read without the lock: replaced as a whole, never changed in place.
        self._copy: _Copy | None = None
        self._parsed: dict[tuple[Any, Any, Any, Any], NetworkRule | None] = {}
        #: When (monotonic) the last failed check started, and its error.
        self._failed: tuple[float, str] | None = None
        self._missing_logged = False
        #: Full reads of the rows (benchmarks/netrules_100k.py checks that an
        #: unchanged version costs none).
        self.reloads = 0

    def _fresh(self, copy: _Copy | None, now: float) -> bool:
        """True when ``copy`` may decide a login that started at ``now``."""
        if copy is None:
            return False
        # confirmed by a check that started after this login did, or recently enough
        return copy.confirmed >= now or now - copy.confirmed < self.cache_seconds

    def get(self) -> RuleSet:
        """The current rules; BackendError when they cannot be confirmed."""
        now = self._clock()
        copy = self._copy
        if self._fresh(copy, now):
            assert copy is not None
            return copy.rules
        with self._lock:
            copy = self._copy
            if self._fresh(copy, now):
                assert copy is not None
                return copy.rules
            failed = self._failed
            if failed is not None and failed[0] >= now:
                # a check that started after this login did has just failed
                raise BackendError(failed[1])
            started = self._clock()
            try:
                copy = self._check(copy, started)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, BackendError) else repr(exc)
                self._failed = (started, f"global networks not confirmed: {reason}")
                raise
            self._failed = None
            self._copy = copy
            return copy.rules

    def _check(self, copy: _Copy | None, started: float) -> _Copy:
        rows = self.db.raw_rows(self.db.compiled(VERSION_QUERY))
        version = (rows[0][0], rows[0][1]) if rows else (None, None)
        if version[0] is None:
            self._log_missing_row()
        elif copy is not None and copy.version == version:
            return _Copy(copy.rules, version, started)
        # first load, version moved, or no counter row (then at every check:
        # correct, only slower)
        self.reloads += 1
        with _collector_paused():
            raw = self.db.raw_rows(self.db.compiled(GLOBAL_RULE_ROWS))  # 100k rows: no per-row work
            rules = self._ruleset(raw)
        return _Copy(rules, version, started)

    def _log_missing_row(self) -> None:
        if not self._missing_logged:
            self._missing_logged = True
            log.error(
                "%s",
                kv(
                    "rules_generation has no row 1: global networks are re-read at every check",
                    fix="INSERT INTO rules_generation (id, generation) VALUES (1, 0)",
                ),
            )

    def _ruleset(self, rows: Sequence[Any]) -> RuleSet:
        """Parse global rows, reusing the rules of rows unchanged since the last load
        (100,000 networks then reload in a fraction of the first load's time, and an
        invalid row is logged once, not at every reload)."""
        old = self._parsed
        parsed: dict[tuple[Any, Any, Any, Any], NetworkRule | None] = {}
        rules = []
        for row_id, network, services, comment, expires in rows:
            key = (network, services, comment, expires)
            if key in old:
                rule = old[key]
            else:
                result = parse_rule(
                    "global_networks", row_id, network, services, comment, None, expires
                )
                rule = result if isinstance(result, NetworkRule) else None
            parsed[key] = rule
            if rule is not None:
                rules.append(rule)
        self._parsed = parsed
        return RuleSet(rules)

    def expire(self) -> None:
        """Make the next use check the database (the copy stays until a check replaces it)."""
        with self._lock:
            if self._copy is not None:
                self._copy = self._copy._replace(confirmed=float("-inf"))

    def invalidate(self) -> None:
        """Forget the copy: the next use re-reads every row (e.g. after a write)."""
        with self._lock:
            self._copy = None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a bulk of acyclic objects is built.

    Loading 100,000 global networks allocates several hundred thousand tuples,
    none in a reference cycle (they are freed by reference counting); the
    collector would otherwise rescan the growing heap again and again, about a
    quarter of a cold load (benchmarks/netrules_100k.py). Re-enabled only if it
    was enabled, so nesting and other threads end with it enabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
