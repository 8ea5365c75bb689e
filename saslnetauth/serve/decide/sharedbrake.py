"""The shared brute-force brake (``[state] url`` set): the client's and the user's
failure counts of every host (:mod:`saslnetauth.serve.decide.sharedpenalty`), read
and written around each login within :data:`TIMEOUT`, never in its way.

This host's own penalty boxes keep counting as without a store (the responder's
:class:`~saslnetauth.serve.authsocket.brakes.Brakes`); a login waits what the larger
of the two counts asks. When the store does not answer in time (down, slow,
restarted), the brake falls back to this host's boxes: one WARNING line, the
``fallbacks`` counter of /metrics, ``up`` 0; logins go on, braked by what this host
saw. A probe every :data:`RETRY` seconds notices the store's return (one INFO line)
and the shared counts are used again, with no restart. While it is down no login
waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from saslnetauth.logfmt import kv
from saslnetauth.serve.decide.penalty import PenaltyBox
from saslnetauth.serve.decide.sharedpenalty import SharedPenalties, Step

__all__ = ["RETRY", "TIMEOUT", "SharedBrake", "open_shared_brake"]

log = logging.getLogger("saslnetauth.serve.brake")

#: Seconds one read or write of the brake may take (at most [state] timeout).
TIMEOUT = 0.25
#: Seconds between two probes of a store that did not answer.
RETRY = 1.0

T = TypeVar("T")


class SharedBrake:
    """The shared counts with their fallback (one per responder)."""

    def __init__(
        self, store: SharedPenalties, *, timeout: float = TIMEOUT, where: str = ""
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.where = where
        #: Whether the shared counts are in use (0 in /metrics: this host's alone).
        self.up = True
        #: Times the brake fell back to this host's counts.
        self.fallbacks = 0
        #: Logins that waited a client penalty, failures the user penalty lengthened,
        #: while the shared counts were in use.
        self.client_waits = 0
        self.user_waits = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """``work()`` within the timeout; None when the store is down or fails now."""
        if not self.up:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await work()
        except Exception as exc:  # any failure of the store: this host's counts
            self._down(exc)
            return None

    def _down(self, exc: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        self.fallbacks += 1
        error = str(exc) or type(exc).__name__
        log.warning(
            "%s",
            kv(
                "shared brake unavailable, braking with this host's counts",
                store=self.where,
                error=error,
            ),
        )
        self._spawn(self._probe())

    async def _probe(self) -> None:
        while not self.up:
            await asyncio.sleep(RETRY)
            self.up = await self._answers()
        log.info("%s", kv("shared brake available again", store=self.where))

    async def _answers(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.ping()
        except Exception:  # still down: the next probe tries again
            return False
        return True

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def client_wait(
        self, key: tuple[int, int], box: PenaltyBox, now: float
    ) -> tuple[float, bool]:
        """What a login from ``key`` waits: the larger of every host's count and this
        host's (``box``); this host's alone while the store is down. And whether the
        store counted no failure of it (its success then has nothing to clear)."""
        local = box.failures(key, now)
        shared = await self._call(lambda: self.store.client_failures(key))
        wait = box.delay_for(max(local, shared or 0))
        if shared is not None and wait > 0:
            self.client_waits += 1
        return wait, shared == 0

    async def settle(self, step: Step, box: PenaltyBox, local_extra: float) -> float:
        """Write ``step`` to the store; the seconds the user's penalty adds (the larger
        of every host's count before it and this host's, ``local_extra``). A cleared
        client is written in the background: a success is answered at once."""
        if step.empty:
            return local_extra
        if step.clear:
            self.settle_later(step)
            return local_extra
        before = await self._call(lambda: self.store.settle(step))
        if before is None or step.user is None:
            return local_extra
        extra = max(local_extra, box.delay_for(before))
        if extra > 0:
            self.user_waits += 1
        return extra

    def settle_later(self, step: Step) -> None:
        """Write ``step`` without waiting for it (a success; the policy endpoint's
        reports)."""
        if self.up and not step.empty:
            self._spawn(self._settle_quietly(step))

    async def _settle_quietly(self, step: Step) -> None:
        await self._call(lambda: self.store.settle(step))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()


def open_shared_brake(url: str, prefix: str, timeout: float, expire: float) -> SharedBrake:
    """The shared brake on the Redis or Valkey server of ``[state] url`` (redis-py's
    asyncio client, as the sending counters; it connects at first use)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError

    limit = min(timeout, TIMEOUT)
    # one retry on a connection the server closed (a restart), within the same limit
    client = aioredis.from_url(
        url,
        socket_timeout=limit,
        socket_connect_timeout=limit,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[ConnectionError],
        health_check_interval=30,
    )
    where = url.split("@")[-1]  # never a password of the URL in a log line
    return SharedBrake(SharedPenalties(client, prefix, expire), timeout=limit, where=where)
