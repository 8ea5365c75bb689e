"""Decision worker processes for ``saslnetauth serve``.

Each worker is a separate process running the ordinary decision engine
(database lookup, password verification, logging, verdict record). The
event loop of the server hands it each login (its fields, :mod:`.frames`) over a
UNIX socket pair and awaits the verdict, so neither hashing nor the
database nor the engine's Python code ever runs on the loop, and every core
works whether or not a hash releases the GIL (measured in
``benchmarks/gil.py``: argon2, bcrypt and libcrypt do; the per-login Python
around them does not).

Workers are started with the ``spawn`` method (no fork of a process with
threads and an event loop). A worker that dies fails its requests
temporarily (the request's future raises :class:`BackendError`, which the server
answers, logs and records as TEMPFAIL) and is replaced; a request that takes
longer than ``[serve] request_timeout`` fails temporarily. Frames are a 4-byte length and a
pickle of a tuple; both ends are this program.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from saslnetauth.errors import BackendError
from saslnetauth.logfmt import kv
from saslnetauth.policy.verdict import Decision
from saslnetauth.serve.decide.decider import Decider, Login
from saslnetauth.serve.decide.frames import cut_frames, decision_from, frame, login_message
from saslnetauth.serve.decide.threads import RETIRE_TIMEOUT, ThreadDecider
from saslnetauth.serve.decide.worker_process import worker_main

if TYPE_CHECKING:
    from saslnetauth.config import Config

__all__ = ["Decider", "ThreadDecider", "WorkerPool", "make_decider"]

log = logging.getLogger("saslnetauth.serve.workers")

#: Requests a worker holds at once (the rest wait in the server's queue).
PER_WORKER = 2
#: Seconds a new worker may take to get ready.
START_TIMEOUT = 60.0
#: Seconds between checks for requests past ``[serve] request_timeout``.
SWEEP_INTERVAL = 0.1


def make_decider(cfg: Config) -> Decider:
    """``[serve] worker_mode``: "processes" (default) or "threads"."""
    n = cfg.serve.workers or (os.cpu_count() or 1)
    if cfg.serve.worker_mode == "threads":
        return ThreadDecider(cfg, n)
    return WorkerPool(cfg, n)


def _fail(fut: asyncio.Future[Decision], detail: str) -> None:
    """The request could not be decided: the caller gets BackendError, and the
    server answers (and logs) TEMPFAIL."""
    if not fut.done():
        fut.set_exception(BackendError(detail))


@dataclass(eq=False)
class _Job:
    rid: int
    user: str
    frame: bytes
    future: asyncio.Future[Decision]
    deadline: float


@dataclass(eq=False)
class _Worker:
    process: Any
    link: _WorkerLink
    pid: int
    pending: dict[int, _Job] = field(default_factory=dict)
    retiring: bool = False


class _WorkerLink(asyncio.Protocol):
    """The server's end of one worker's socket: frames are cut out of the byte
    stream as they arrive and handed over synchronously (no task wakes up per
    reply, and a read that carries several replies is one callback)."""

    def __init__(self, on_frame: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (not always an asyncio.Transport subclass: uvloop's)
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            frames = cut_frames(self.buffer)
        except EOFError:
            self.close()
            return
        for msg in frames:
            self.on_frame(msg)
            if self.closed:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed or self.transport.is_closing():
            raise ConnectionError("worker link closed")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WorkerPool:
    """``size`` decision workers behind one queue kept in the server process.

    A worker gets at most :data:`PER_WORKER` requests at a time; the rest wait
    in the queue, and a request whose deadline passes while it waits is never
    sent (it has already been answered TEMPFAIL), so an overload does not
    leave the workers hashing for clients that are gone.
    """

    def __init__(self, cfg: Config, size: int) -> None:
        self.cfg = cfg
        self.size = max(1, size)
        self.workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._ctx = multiprocessing.get_context("spawn")
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()
        self._queue: deque[_Job] = deque()
        self._refill_scheduled = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._retiring: list[_Worker] = []  # replaced, finishing their requests
        self.deaths = 0

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        started = await asyncio.gather(*(self._spawn(self.cfg) for _ in range(self.size)))
        self.workers.extend(started)

    async def _spawn(self, cfg: Config) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc = self._ctx.Process(
            target=worker_main, args=(child, cfg), name="saslnetauth-worker", daemon=True
        )
        proc.start()
        child.close()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()

        def on_ready(msg: Any) -> None:
            if not ready.done() and isinstance(msg, tuple) and msg[:1] == ("ready",):
                ready.set_result(int(msg[1]))

        def on_early_exit() -> None:
            if not ready.done():
                ready.set_exception(EOFError("worker exited before it was ready"))

        _, link = await loop.create_unix_connection(
            lambda: _WorkerLink(on_ready, on_early_exit), sock=parent
        )
        try:
            pid = await asyncio.wait_for(ready, START_TIMEOUT)
            if link.closed:
                raise EOFError("worker exited right after it was ready")
        except (TimeoutError, EOFError) as exc:
            proc.kill()
            link.close()
            raise RuntimeError(f"decision worker did not start: {exc!r}") from None
        worker = _Worker(proc, link, pid)
        link.on_frame = lambda msg: self._on_reply(worker, msg)
        link.on_lost = lambda: self._on_lost(worker)
        log.info("%s", kv("worker started", pid=pid))
        return worker

    async def close(self, timeout: float = 10.0) -> None:
        """Stop every worker, those retiring after a reload included, within ``timeout``."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        workers, self.workers = self.workers, []
        await asyncio.gather(*(self._retire(w, timeout) for w in workers))
        while self._queue:  # never sent: answered like a request that timed out
            _fail(self._queue.popleft().future, "decision workers stopped")
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    async def reload(self, cfg: Config) -> None:
        """Start workers with ``cfg``; old ones finish what they have, then exit."""
        new = await asyncio.gather(*(self._spawn(cfg) for _ in range(self.size)))
        old, self.workers = self.workers, list(new)
        self.cfg = cfg
        self._dispatch()
        for w in old:
            task = asyncio.ensure_future(self._retire(w, RETIRE_TIMEOUT))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _retire(self, w: _Worker, timeout: float) -> None:
        w.retiring = True
        self._retiring.append(w)
        try:
            await self._stop_worker(w, timeout)
        finally:
            self._retiring.remove(w)

    async def _stop_worker(self, w: _Worker, timeout: float) -> None:
        with contextlib.suppress(Exception):
            w.link.write(frame(None))
        deadline = time.monotonic() + timeout
        while w.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if w.process.is_alive():
            w.process.kill()
        for _ in range(20):  # what it answered before it exited is read first
            if w.link.closed:
                break
            await asyncio.sleep(0.05)
        w.link.close()
        for job in w.pending.values():
            if not job.future.done():
                _fail(job.future, "decision worker stopped")
        w.pending.clear()

    # -- requests --------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        # one more per worker waits in our queue: a worker's next request is sent the
        # moment it answers, without a round through the scheduler in front of us
        return self.size * (PER_WORKER + 1)

    async def decide(self, login: Login, timeout: float | None = None) -> Decision:
        if not any(not w.retiring for w in self.workers) and self._closing:
            raise BackendError("no decision worker available")
        loop = asyncio.get_running_loop()
        rid = next(self._ids)
        if timeout is None:
            timeout = self.cfg.serve.request_timeout
        deadline = loop.time() + timeout  # time.monotonic(): the worker reads the same clock
        message = login_message(rid, replace(login, deadline=deadline))
        job = _Job(rid, login.user, frame(message), loop.create_future(), deadline)
        self._queue.append(job)
        self._dispatch()
        if self._sweeper is None:
            self._sweeper = loop.call_later(min(SWEEP_INTERVAL, timeout / 4), self._sweep)
        return await job.future

    def _sweep(self) -> None:
        """Answer TEMPFAIL to requests past their deadline (one timer for all of them,
        not one per login), queued or with a worker; rescheduled while any remain."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        remaining = False
        workers = [*self.workers, *self._retiring]
        for jobs in (self._queue, *(w.pending.values() for w in workers)):
            for job in jobs:
                if job.future.done():
                    continue
                if job.deadline <= now:
                    _fail(job.future, "verification timed out")
                else:
                    remaining = True
        self._sweeper = None
        if remaining:
            timeout = self.cfg.serve.request_timeout
            self._sweeper = loop.call_later(min(SWEEP_INTERVAL, timeout / 4), self._sweep)

    def _dispatch(self) -> None:
        """Send queued requests to workers with room; skip those already answered.

        The frames a worker gets in one pass go out in one write."""
        batches: dict[_Worker, list[_Job]] = {}
        while self._queue:
            free = [w for w in self.workers if not w.retiring and len(w.pending) < PER_WORKER]
            if not free:
                break
            job = self._queue.popleft()
            if job.future.done():  # timed out while queued: never sent
                continue
            w = min(free, key=lambda x: len(x.pending))
            w.pending[job.rid] = job
            batches.setdefault(w, []).append(job)
        for w, jobs in batches.items():
            try:
                w.link.write(b"".join(job.frame for job in jobs))
            except (ConnectionError, OSError, RuntimeError) as exc:
                for job in jobs:
                    w.pending.pop(job.rid, None)
                    _fail(job.future, f"decision worker unreachable: {exc!r}")

    def _on_reply(self, w: _Worker, msg: Any) -> None:
        if len(msg) == 1:  # past its deadline when the worker came to it: not decided
            job = w.pending.pop(msg[0], None)
            if job is not None:
                _fail(job.future, "verification timed out")
        else:
            self._on_decision(w, msg)
        # one refill per pass of the event loop, after every reply of that pass:
        # the frames it sends a worker then share one write
        if not self._refill_scheduled:
            self._refill_scheduled = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _on_decision(self, w: _Worker, msg: Any) -> None:
        job = w.pending.pop(msg[0], None)
        if job is not None and not job.future.done():
            job.future.set_result(decision_from(msg))

    def _refill(self) -> None:
        self._refill_scheduled = False
        self._dispatch()

    def _on_lost(self, w: _Worker) -> None:
        if w.retiring or self._closing:
            return
        self.deaths += 1
        log.error("%s", kv("decision worker died", pid=w.pid, failed_requests=len(w.pending)))
        for job in w.pending.values():
            _fail(job.future, "decision worker died")
        w.pending.clear()
        with contextlib.suppress(ValueError):
            self.workers.remove(w)
        w.link.close()
        task = asyncio.ensure_future(self._replace_and_dispatch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _replace_and_dispatch(self) -> None:
        await self._replace()
        self._dispatch()

    async def _replace(self) -> None:
        while not self._closing:
            try:
                self.workers.append(await self._spawn(self.cfg))
                return
            except Exception as exc:
                log.error("%s", kv("cannot start a decision worker", error=repr(exc)))
                await asyncio.sleep(1.0)

    def describe(self) -> str:
        return f"{self.size} processes"

    def metric_values(self) -> list[tuple[str, str, float]]:
        """(name, help, value) for the server's /metrics."""
        return [
            (
                "saslnetauth_worker_deaths_total",
                "Decision worker processes that died and were replaced.",
                self.deaths,
            )
        ]
