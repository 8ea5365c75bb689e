"""Decision worker processes for ``saslnetauth serve``.

Each worker is a separate process running the ordinary decision engine
(database lookup, password verification, logging, verdict record). The
event loop of the server hands it ``(user, password, rip, service)`` over a
UNIX socket pair and awaits the verdict, so neither hashing nor the
database nor the engine's Python code ever runs on the loop, and every core
works whether or not a hash releases the GIL (measured in
``benchmarks/gil.py``: argon2, bcrypt and libcrypt do; the per-login Python
around them does not).

Workers are started with the ``spawn`` method (no fork of a process with
threads and an event loop). A worker that dies fails its requests
temporarily (TEMPFAIL) and is replaced; a request that takes longer than
``[serve] request_timeout`` fails temporarily. Frames are a 4-byte length and a
pickle of a tuple; both ends are this program.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from saslnetauth.logfmt import kv
from saslnetauth.verdict import Decision, Reason, Verdict

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.engine import DecisionEngine

__all__ = ["Decider", "ThreadDecider", "WorkerPool", "make_decider"]

log = logging.getLogger("saslnetauth.workers")

#: Seconds retiring workers get to finish their requests after a reload.
RETIRE_TIMEOUT = 10.0
#: Requests a worker holds at once (the rest wait in the server's queue).
PER_WORKER = 2
#: Seconds a new worker may take to get ready.
START_TIMEOUT = 60.0
_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20


class Decider(Protocol):
    """Where the server's logins are decided: worker processes, or threads."""

    async def start(self) -> None: ...

    async def decide(
        self, user: str, password: bytes, rip: str | None, service: str
    ) -> Decision: ...

    async def reload(self, cfg: Config) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def make_decider(cfg: Config) -> Decider:
    """``[serve] worker_mode``: "processes" (default) or "threads"."""
    n = cfg.serve.workers or (os.cpu_count() or 1)
    if cfg.serve.worker_mode == "threads":
        return ThreadDecider(cfg, n)
    return WorkerPool(cfg, n)


class ThreadDecider:
    """The engine in this process, on a thread pool (for small installations and
    comparison: only the hashes release the GIL, the Python around them does not)."""

    def __init__(self, cfg: Config, size: int) -> None:
        self.cfg = cfg
        self.size = max(1, size)
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="saslnetauth-decide")
        self.engine: DecisionEngine | None = None

    async def start(self) -> None:
        from saslnetauth.runtime import build_server_engine

        self.engine = build_server_engine(self.cfg, check_schema=False)

    async def decide(self, user: str, password: bytes, rip: str | None, service: str) -> Decision:
        engine = self.engine
        if engine is None:
            return _tempfail(user, "not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, engine.decide, user, password, rip, service
        )

    async def reload(self, cfg: Config) -> None:
        from saslnetauth.runtime import build_server_engine

        old, self.engine, self.cfg = self.engine, build_server_engine(cfg, check_schema=False), cfg
        if old is not None:
            asyncio.get_running_loop().call_later(RETIRE_TIMEOUT, old.close)

    async def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)

    def describe(self) -> str:
        return f"{self.size} threads"


def _send(sock: socket.socket, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise EOFError
    return pickle.loads(_recv_exact(sock, size))  # noqa: S301 - our own parent process


def worker_main(sock: socket.socket, cfg: Config) -> None:
    """Entry point of a worker process: decide until the parent says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from saslnetauth.runtime import build_server_engine, setup_logging

    setup_logging(cfg)
    engine = build_server_engine(cfg, check_schema=False)
    engine.preload()  # global networks are loaded before the first login, not during it
    _send(sock, ("ready", os.getpid()))
    try:
        while True:
            try:
                msg = _recv(sock)
            except (EOFError, OSError):
                break
            if msg is None:
                break
            rid, user, password, rip, service = msg
            d = engine.decide(user, password, rip, service)
            _send(
                sock,
                (
                    rid,
                    d.verdict.value,
                    d.reason.value,
                    d.user,
                    d.credentials_valid,
                    d.network_ok,
                    d.matched,
                    d.detail,
                ),
            )
    finally:
        engine.close()


def _expire(fut: asyncio.Future[Decision], user: str) -> None:
    if not fut.done():
        log.error("%s", kv("verification timed out", user=user))
        fut.set_result(_tempfail(user, "verification timed out"))


def _tempfail(user: str, detail: str) -> Decision:
    return Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, user, detail=detail)


@dataclass(eq=False)
class _Job:
    rid: int
    user: str
    frame: bytes
    future: asyncio.Future[Decision]


@dataclass(eq=False)
class _Worker:
    process: Any
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    pending: dict[int, _Job] = field(default_factory=dict)
    retiring: bool = False
    task: asyncio.Task[None] | None = None


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
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        try:
            head = await asyncio.wait_for(reader.readexactly(_HEADER.size), START_TIMEOUT)
            (size,) = _HEADER.unpack(head)
            _, pid = pickle.loads(await reader.readexactly(size))  # noqa: S301
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            proc.kill()
            writer.close()
            raise RuntimeError(f"decision worker did not start: {exc!r}") from None
        worker = _Worker(proc, reader, writer, pid)
        worker.task = asyncio.ensure_future(self._read_replies(worker))
        log.info("%s", kv("worker started", pid=pid))
        return worker

    async def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        workers, self.workers = self.workers, []
        await asyncio.gather(*(self._retire(w, timeout) for w in workers))

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
        with contextlib.suppress(Exception):
            w.writer.write(_frame(None))
            await w.writer.drain()
        deadline = time.monotonic() + timeout
        while w.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if w.process.is_alive():
            w.process.kill()
        w.writer.close()

    # -- requests --------------------------------------------------------------------

    async def decide(self, user: str, password: bytes, rip: str | None, service: str) -> Decision:
        if not any(not w.retiring for w in self.workers) and self._closing:
            return _tempfail(user, "no decision worker available")
        loop = asyncio.get_running_loop()
        rid = next(self._ids)
        job = _Job(rid, user, _frame((rid, user, password, rip, service)), loop.create_future())
        timer = loop.call_later(self.cfg.serve.request_timeout, _expire, job.future, user)
        self._queue.append(job)
        self._dispatch()
        try:
            return await job.future
        finally:
            timer.cancel()

    def _dispatch(self) -> None:
        """Send queued requests to workers with room; skip those already answered."""
        while self._queue:
            free = [w for w in self.workers if not w.retiring and len(w.pending) < PER_WORKER]
            if not free:
                return
            job = self._queue.popleft()
            if job.future.done():  # timed out while queued: never sent
                continue
            w = min(free, key=lambda x: len(x.pending))
            w.pending[job.rid] = job
            try:
                w.writer.write(job.frame)
            except (ConnectionError, OSError, RuntimeError) as exc:
                w.pending.pop(job.rid, None)
                job.future.set_result(_tempfail(job.user, f"decision worker unreachable: {exc!r}"))

    async def _read_replies(self, w: _Worker) -> None:
        try:
            while True:
                head = await w.reader.readexactly(_HEADER.size)
                (size,) = _HEADER.unpack(head)
                msg = pickle.loads(await w.reader.readexactly(size))  # noqa: S301
                rid, verdict, reason, user, valid, net_ok, matched, detail = msg
                job = w.pending.pop(rid, None)
                if job is not None and not job.future.done():
                    job.future.set_result(
                        Decision(
                            Verdict(verdict), Reason(reason), user, valid, matched, detail, net_ok
                        )
                    )
                self._dispatch()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        if w.retiring or self._closing:
            return
        self.deaths += 1
        log.error("%s", kv("decision worker died", pid=w.pid, failed_requests=len(w.pending)))
        for job in w.pending.values():
            if not job.future.done():
                job.future.set_result(_tempfail(job.user, "decision worker died"))
        w.pending.clear()
        with contextlib.suppress(ValueError):
            self.workers.remove(w)
        w.writer.close()
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

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def in_flight(self) -> int:
        return sum(len(w.pending) for w in self.workers) + len(self._queue)


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data
