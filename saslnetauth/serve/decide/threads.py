"""``[serve] worker_mode = "threads"``: the decision engine in the server's own
process, on a thread pool (for small installations and comparison: only the
hashes release the GIL, the Python around them does not)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from saslnetauth.errors import BackendError
from saslnetauth.policy.verdict import Decision

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.policy.engine import DecisionEngine
    from saslnetauth.serve.decide.decider import Login

__all__ = ["ThreadDecider"]

#: Seconds an engine (or worker process) replaced by a reload keeps finishing its
#: decisions.
RETIRE_TIMEOUT = 10.0


class ThreadDecider:
    """The engine in this process, on a thread pool (for small installations and
    comparison: only the hashes release the GIL, the Python around them does not)."""

    def __init__(self, cfg: Config, size: int) -> None:
        self.cfg = cfg
        self.size = max(1, size)
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="saslnetauth-decide")
        self.engine: DecisionEngine | None = None
        self._retired: list[DecisionEngine] = []  # replaced by a reload, closed later

    async def start(self) -> None:
        from saslnetauth.runtime import build_server_engine

        self.engine = build_server_engine(self.cfg)

    @property
    def capacity(self) -> int:
        return self.size

    async def decide(self, login: Login, timeout: float | None = None) -> Decision:
        engine = self.engine
        if engine is None:
            raise BackendError("decision threads not started")
        loop = asyncio.get_running_loop()
        after_reply: list[Callable[[], None]] = []
        if timeout is None:
            timeout = self.cfg.serve.request_timeout
        # past the limit the caller gets TimeoutError (TEMPFAIL); the thread finishes
        # its decision unseen
        async with asyncio.timeout(timeout):
            decision = await loop.run_in_executor(
                self.executor,
                functools.partial(engine.decide, login, after_reply=after_reply),
            )
        if after_reply:
            # call_soon: the server sends the reply in the step that resumes now,
            # so the rehash is handed to the pool only after that
            loop.call_soon(self._after_reply, after_reply)
        return decision

    def _after_reply(self, jobs: list[Callable[[], None]]) -> None:
        for job in jobs:
            self.executor.submit(job)

    async def reload(self, cfg: Config) -> None:
        from saslnetauth.runtime import build_server_engine

        old, self.engine, self.cfg = self.engine, build_server_engine(cfg), cfg
        if old is not None:
            self._retired.append(old)
            asyncio.get_running_loop().call_later(RETIRE_TIMEOUT, self._close_retired, old)

    def _close_retired(self, engine: DecisionEngine) -> None:
        if engine in self._retired:
            self._retired.remove(engine)
            engine.close()

    async def close(self) -> None:
        """Finish the decisions running (off the event loop), then close every engine."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.executor.shutdown)
        engines, self._retired = [*self._retired, self.engine], []
        for engine in engines:
            if engine is not None:
                await loop.run_in_executor(None, engine.close)

    def describe(self) -> str:
        return f"{self.size} threads"

    def metric_values(self) -> list[tuple[str, str, float]]:
        """No gauges of its own."""
        return []
