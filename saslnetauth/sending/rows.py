"""Each user's sending settings, kept in memory until the database says they changed.

A policy decision needs the user's limits and suspensions (the ``users`` row and
its app passwords). Reading them for every message is most of a decision's
cost, so the policy server keeps them, under this rule (the global networks'
rule, docs/database.md):

* copies confirmed by the database less than ``cache_seconds`` ago are used as
  they are;
* otherwise, before the decision, the database is asked for the settings'
  version (:data:`~saslnetauth.store.sending.SENDING_VERSION`: a counter that
  triggers bump inside every transaction that adds or deletes a user or an app
  password or changes a name, a limit or a suspension, whoever writes it). One
  query for all users, shared by every decision waiting at that moment. When it
  moved, every copy is dropped;
* a row read that started before a check that dropped the copies is used by its
  own decision but not kept (it may predate the change);
* a check that fails fails the decision (the caller defers: fail closed); a
  copy is never used once it is older than ``cache_seconds`` without a
  successful check. No version (the counter's row deleted): copies live
  ``cache_seconds`` at most, and a warning is logged once.

So a decision that starts more than ``cache_seconds`` after a change was
committed sees it, while a busy server reads a user's row about once per
change instead of once per message. ``cache_seconds`` 0: every decision reads
the row. At most ``max_rows`` users are kept (the oldest go first); a reload
(SIGHUP) drops them all, for writes that bypass the triggers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from saslnetauth.logfmt import kv

__all__ = ["MAX_ROWS", "SettingsCache"]

log = logging.getLogger("saslnetauth.sending")

#: Users whose settings are kept at most.
MAX_ROWS = 100_000

T = TypeVar("T")


class SettingsCache(Generic[T]):
    """``get(name)`` on the event loop; the reads run in threads."""

    def __init__(
        self,
        read: Callable[[str], T],
        version: Callable[[], tuple[Any, ...] | None],
        cache_seconds: float,
        *,
        max_rows: int = MAX_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.version = version
        self.cache_seconds = cache_seconds
        self.max_rows = max_rows
        self.clock = clock
        self._rows: dict[str, T] = {}
        self._version: tuple[Any, ...] | None = None
        self._confirmed = float("-inf")  # when the last successful check started
        self._epoch = 0  # moves when the copies are dropped
        self._check: asyncio.Future[None] | None = None
        self._warned = False
        self.reads = 0
        self.checks = 0

    def __len__(self) -> int:
        return len(self._rows)

    async def get(self, name: str) -> T:
        if self.cache_seconds <= 0:
            self.reads += 1
            return await asyncio.to_thread(self.read, name)
        if self.clock() - self._confirmed >= self.cache_seconds:
            await self._confirm()
        try:
            return self._rows[name]
        except KeyError:
            pass
        epoch = self._epoch
        self.reads += 1
        value = await asyncio.to_thread(self.read, name)
        if epoch == self._epoch:
            if len(self._rows) >= self.max_rows:
                del self._rows[next(iter(self._rows))]
            self._rows[name] = value
        return value

    def forget(self, name: str) -> None:
        """Drop one user's copy (after this server changed the row)."""
        self._rows.pop(name, None)

    def clear(self) -> None:
        """Drop every copy (a reload: SIGHUP)."""
        self._drop()

    async def _confirm(self) -> None:
        """One version check at a time; every decision waiting shares it."""
        if self._check is None:
            self._check = asyncio.ensure_future(self._run_check())
        check = self._check
        await asyncio.shield(check)

    async def _run_check(self) -> None:
        try:
            started = self.clock()
            self.checks += 1
            version = await asyncio.to_thread(self.version)
            if version is None:
                if not self._warned:
                    log.warning(
                        "%s",
                        kv(
                            "sending_generation has no row 1: sending settings are "
                            "re-read every cache_seconds",
                            fix="INSERT INTO sending_generation (id, generation) VALUES (1, 0)",
                        ),
                    )
                    self._warned = True
                self._drop()
            elif version != self._version:
                self._drop()
            self._version = version
            self._confirmed = started
        finally:
            self._check = None

    def _drop(self) -> None:
        self._rows.clear()
        self._epoch += 1
