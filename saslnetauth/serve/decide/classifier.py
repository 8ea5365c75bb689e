"""The cheap first step of every login, on one thread of the server process.

:meth:`saslnetauth.policy.engine.DecisionEngine.triage` (user lookup and network
match, tens of microseconds) runs here on an engine of its own, so that the
scheduler (:mod:`saslnetauth.serve.decide.scheduler`) knows whether a login *could*
succeed before it spends a hash on it. The event loop never waits for the
database: requests go to the thread through a queue, and the thread answers
each batch it took with one ``call_soon_threadsafe`` (database drivers
release the GIL while they wait). Logins the scheduler refuses without a
hash are logged and recorded here too, off the event loop.

What a classification read is kept for ``global_cache_seconds``: a login of
the same name then classifies on the event loop from it (no I/O, a few
microseconds) when the result is "could succeed", which only decides its
place in the queue (the worker still decides it on fresh data). A "cannot
succeed" result, which may refuse a login unverified, always comes from a
fresh lookup, so a network an admin has just added is in force
(docs/design.md, point 7).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from saslnetauth.logfmt import kv
from saslnetauth.policy.cheap import may_be_cheap
from saslnetauth.policy.classification import Classified, Lookup, refusal
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.policy.engine import DecisionEngine

__all__ = ["Classifier"]

log = logging.getLogger("saslnetauth.serve.classifier")

#: Requests the thread takes from its queue at once.
BATCH = 256
#: Names whose lookup is kept at most (all are forgotten when full).
MAX_CACHED = 10000

_Refuse = tuple[Classified, Login]
#: (the future, its classification or, for "d", perhaps its decision, the time read).
_Answer = tuple["asyncio.Future[Any]", "Classified | Decision", float]
#: ("c", (future, login)), ("d", (future, login)), ("r", (classified, login)),
#: ("reload", cfg), or None to stop.
_Item = tuple[str, Any] | None


class Classifier:
    """Classifies logins on a thread with its own engine (and store)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The thread's engine, for :meth:`cached` (its matching is pure).
        self.engine: DecisionEngine | None = None
        self._cache: dict[str, tuple[float, Lookup]] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="saslnetauth-classify", daemon=True
        )
        self._thread.start()
        await ready

    def triage(self, login: Login) -> asyncio.Future[Classified]:
        """A future of the login's classification (set on the event loop); of the
        password it reads only ``login.credential``, the name of the credential."""
        assert self._loop is not None, "start() first"
        fut: asyncio.Future[Classified] = self._loop.create_future()
        self._queue.put(("c", (fut, login)))
        return fut

    def decide_if_cheap(self, login: Login) -> asyncio.Future[Classified | Decision]:
        """A future of the login's decision when it is cheap to decide (made here, from
        the one lookup: :meth:`DecisionEngine.decide_if_cheap`), else of its
        classification, for a worker to decide."""
        assert self._loop is not None, "start() first"
        fut: asyncio.Future[Classified | Decision] = self._loop.create_future()
        self._queue.put(("d", (fut, login)))
        return fut

    def may_be_cheap(self, login: Login) -> bool:
        """Whether to try :meth:`decide_if_cheap` first: not when a recent lookup of the
        name says its credential is slow to verify (then straight to the scheduler)."""
        engine = self.engine
        if engine is None or login.real_rip is not None or engine.proxies:
            return False
        hit = self._cache.get(login.user)
        if hit is None or time.monotonic() - hit[0] >= self.cfg.global_cache_seconds:
            return True
        return may_be_cheap(hit[1].user, login)

    def cached(self, login: Login) -> Classified | None:
        """A "could succeed" classification from a recent lookup of the login's name,
        or None."""
        ttl = self.cfg.global_cache_seconds
        engine = self.engine
        hit = self._cache.get(login.user)
        if hit is None or engine is None or time.monotonic() - hit[0] >= ttl:
            return None
        c = engine.match_cached(hit[1], login)
        return c if c.could_succeed else None

    def refuse(self, c: Classified, login: Login) -> Decision:
        """The FAIL of a login refused without a hash; its log line and record are
        written on the thread (the reply does not wait for them)."""
        self._queue.put(("r", (c, login)))
        return refusal(c)

    async def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self._cache.clear()
        self._queue.put(("reload", cfg))

    async def close(self) -> None:
        self._queue.put(None)
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

    def _deliver(self, answers: list[_Answer]) -> None:
        """On the event loop: the batch's results, and their lookups for :meth:`cached`."""
        cache = self._cache
        for fut, c, read in answers:
            if not fut.done():
                fut.set_result(c)
            if not isinstance(c, Classified) or c.lookup is None:
                continue
            if self.cfg.global_cache_seconds > 0:
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                cache[c.lookup.given] = (read, c.lookup)

    # -- the thread ------------------------------------------------------------------

    def _build(self, cfg: Config) -> DecisionEngine | None:
        from saslnetauth.runtime import build_server_engine

        try:
            engine = build_server_engine(cfg)
        except Exception as exc:  # logins then go to the workers unclassified
            log.error("%s", kv("classifier not available", error=repr(exc)))
            return None
        engine.preload()
        return engine

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        self.engine = self._build(self.cfg)
        loop.call_soon_threadsafe(_set_done, ready)
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not self._pass(loop, batch):
                    return
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            return
        finally:
            if self.engine is not None:
                self.engine.close()

    def _pass(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> bool:
        """One batch on the thread; False when told to stop. The answers go back in one
        call; logging of refusals, and work that waits for the reply, after them."""
        answers: list[_Answer] = []
        later: list[_Refuse] = []
        after_reply: list[Callable[[], None]] = []
        stop = False
        for item in batch:
            if item is None:
                stop = True
                continue
            kind, args = item
            engine = self.engine
            if kind in ("c", "d"):
                fut, login = args
                read = time.monotonic()
                c: Classified | Decision
                if engine is None:
                    c = Classified(str(login.user)[:255], True)
                elif kind == "d":
                    c = engine.decide_if_cheap(login, after_reply)
                else:
                    c = engine.triage(login)
                answers.append((fut, c, read))
            elif kind == "r":
                later.append(args)
            elif kind == "reload":
                new = self._build(args)
                if new is not None:
                    if engine is not None:
                        engine.close()
                    self.engine = new
        if answers:
            loop.call_soon_threadsafe(self._deliver, answers)
        for c, login in later:  # after the answers: logging waits, logins not
            if self.engine is not None:
                self.engine.refuse_unverified(c, login)
        for job in after_reply:
            job()
        return not stop


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
