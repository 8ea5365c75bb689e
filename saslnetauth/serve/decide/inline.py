"""Cheap logins decided in the server process (docs/performance.md, "Cheap logins in
the server").

A :class:`~saslnetauth.serve.decide.decider.Decider` in front of the scheduler
(:mod:`saslnetauth.serve.decide.scheduler`). A login whose credential may be cheap
to verify (:func:`saslnetauth.policy.cheap.may_be_cheap`: not when a recent lookup of
the name found a slow hash) goes first to the classification thread
(:mod:`saslnetauth.serve.decide.classifier`), which looks the user up once and, when
the verification costs a few microseconds (:func:`saslnetauth.policy.cheap.cheap_to_decide`:
``{PLAIN}``, an app password), decides it there with the engine, logging and recording
it like a worker would. Otherwise it hands back the classification, and the
scheduler queues the login as one it classified (fairly, by owner and client,
the hopeless slice bounded), for a worker to decide.

So a cheap login costs no pickling, no pipe, no wake-up of a worker process and
no second read of its row; the event loop only waits for a future, and the
thread's Python work is the engine's for that one login. The reply and its
timing are the frontend's, as for any login: an OK at once, every failure at its
fixed deadline (:mod:`saslnetauth.policy.deadline`), so where a login was decided
does not show in the reply. Logins from trusted proxies, and servers with
``[proxies]`` networks, always take the scheduler's path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from saslnetauth.policy.classification import Classified
from saslnetauth.policy.verdict import Decision

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.serve.decide.decider import Login, MetricValue
    from saslnetauth.serve.decide.scheduler import Scheduler

__all__ = ["InlineCheap"]

#: Seconds between checks for waits past their deadline.
SWEEP_INTERVAL = 0.05


class InlineCheap:
    """Decides cheap logins on the classification thread, the rest by ``scheduler``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.classifier = scheduler.classifier
        #: Logins decided on the classification thread.
        self.inline = 0
        #: (deadline, future) of the logins waiting for the thread, in arrival order.
        self._waiting: deque[tuple[float, asyncio.Future[Classified | Decision]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return self.scheduler.size

    @property
    def capacity(self) -> int:
        return self.scheduler.capacity

    async def start(self) -> None:
        await self.scheduler.start()

    async def reload(self, cfg: Config) -> None:
        await self.scheduler.reload(cfg)

    async def close(self) -> None:
        await self.scheduler.close()

    def describe(self) -> str:
        return f"{self.scheduler.describe()}, cheap logins in the server"

    async def decide(self, login: Login, timeout: float | None = None) -> Decision:
        if not self.classifier.may_be_cheap(login):
            return await self.scheduler.decide(login, timeout)
        loop = asyncio.get_running_loop()
        if timeout is None:
            timeout = self.scheduler.cfg.serve.request_timeout
        deadline = loop.time() + timeout
        fut = self.classifier.decide_if_cheap(login)
        self._waiting.append((deadline, fut))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        got = await fut  # TimeoutError past the deadline: the server's TEMPFAIL
        if isinstance(got, Decision):
            self.inline += 1
            return got
        return await self.scheduler.decide(login, deadline - loop.time(), classified=got)

    def _sweep(self) -> None:
        """Fail the waits past their deadline (one timer for all of them, not one per
        login; the deadlines come in about arrival order, so only the head is read)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = self._waiting
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, fut = waiting.popleft()
            if not fut.done():
                fut.set_exception(TimeoutError("verification timed out"))
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep) if waiting else None

    def metric_values(self) -> list[MetricValue]:
        return [
            *self.scheduler.metric_values(),
            (
                "saslnetauth_inline_total",
                "Logins cheap to verify decided in the server process (no worker).",
                self.inline,
            ),
        ]
