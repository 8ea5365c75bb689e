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

With ``read_all`` (every user's settings in one query: the policy server's), a
check that drops the copies, and the first one, also start one read of every
user in a thread, beside the decisions (which read their own user meanwhile):
so a user's first message after a change reads nothing either. It is kept
under the same rule as a row read (not when a check dropped the copies while it
ran: then it starts again), only when the version is known, and only while
there are at most ``preload_max`` users (:data:`PRELOAD_MAX`; ``read_all``
returns None above it and each user is read at its first decision, as before).
A failing ``read_all`` keeps nothing and is logged; decisions go on reading
their own user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from saslnetauth.logfmt import kv

__all__ = ["MAX_ROWS", "PRELOAD_MAX", "SettingsCache"]

log = logging.getLogger("saslnetauth.sending")

#: Users whose settings are kept at most.
MAX_ROWS = 100_000
#: Users read all at once after a change at most (more: each at its first decision).
PRELOAD_MAX = 20_000
#: Times one preload starts again when checks keep dropping what it read.
PRELOAD_TRIES = 3

T = TypeVar("T")


class SettingsCache(Generic[T]):
    """``get(name)`` on the event loop; the reads run in threads."""

    def __init__(
        self,
        read: Callable[[str], T],
        version: Callable[[], tuple[Any, ...] | None],
        cache_seconds: float,
        *,
        read_all: Callable[[int], dict[str, T] | None] | None = None,
        max_rows: int = MAX_ROWS,
        preload_max: int = PRELOAD_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.read_all = read_all
        self.preload_max = min(preload_max, max_rows)
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
        self._preload: asyncio.Future[None] | None = None
        self.reads = 0
        self.checks = 0
        self.preloads = 0  # read_all calls that returned rows and were kept

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
        """Drop one user's copy (after this server changed the row); no read in
        flight (a preload, another decision's) may put back what it read before."""
        self._rows.pop(name, None)
        self._epoch += 1

    def clear(self) -> None:
        """Drop every copy (a reload: SIGHUP)."""
        self._drop()

    async def close(self) -> None:
        """Stop a preload in flight (the server is stopping)."""
        if self._preload is not None and not self._preload.done():
            self._preload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preload

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
                self._start_preload()
            self._version = version
            self._confirmed = started
        finally:
            self._check = None

    def _start_preload(self) -> None:
        if self.read_all is None or (self._preload is not None and not self._preload.done()):
            return  # the one in flight sees the epoch move and starts again
        self._preload = asyncio.ensure_future(self._run_preload())

    async def _run_preload(self) -> None:
        assert self.read_all is not None
        for _ in range(PRELOAD_TRIES):
            epoch = self._epoch
            try:
                rows = await asyncio.to_thread(self.read_all, self.preload_max)
            except Exception as exc:  # the decisions read their own rows (and fail closed)
                log.warning("%s", kv("sending settings preload failed", error=str(exc)))
                return
            if rows is None:  # over preload_max users
                return
            if epoch == self._epoch:
                for name, value in rows.items():
                    if len(self._rows) >= self.max_rows:
                        break
                    self._rows.setdefault(name, value)
                self.preloads += 1
                return

    def _drop(self) -> None:
        self._rows.clear()
        self._epoch += 1
