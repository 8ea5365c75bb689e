"""Running an admin's command (``alert_command``, ``[revoke] command``): never
through a shell, with a bounded number at once, a time limit and a log line.

:class:`CommandRunner` is the server's: it starts commands in the background of
the event loop, at most ``max_running`` at once; up to ``max_queued`` more wait
for a slot (beyond: dropped with a WARNING); each is killed (its whole process
group) after ``timeout`` seconds; its slot is given back whatever happens, so a
command can neither block, crash nor switch off the server. :func:`run_now` is
the command line's: the same rules, once, waiting for the result.

The caller builds the environment (only ``PATH``, ``LANG`` and its own
``SASLNETAUTH_*`` variables, see :func:`base_environment`): nothing of the
caller's environment (such as a database URL) leaks, and no password ever
goes into a command's arguments, environment or input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from saslnetauth.logfmt import kv, printable

__all__ = ["DEFAULT_PATH", "CommandRunner", "Outcome", "base_environment", "run_now"]

#: PATH when the caller has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Characters of a command's standard error kept for the log line.
ERROR_CHARS = 200


def base_environment(parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """``PATH`` (the caller's, else :data:`DEFAULT_PATH`) and ``LANG`` if set."""
    source = os.environ if parent is None else parent
    env = {"PATH": source.get("PATH") or DEFAULT_PATH}
    if source.get("LANG"):
        env["LANG"] = printable(source["LANG"])
    return env


@dataclass(frozen=True)
class Outcome:
    """How one run ended: ``status`` the exit status (None: it did not start or was
    killed), ``error`` a short text (standard error, or why it did not run)."""

    status: int | None
    error: str = ""
    #: "done" (exit 0 or another of the caller's ``ok_status``), "failed" (another
    #: status), "killed" (timeout), "failed to start".
    kind: str = "done"

    @property
    def ok(self) -> bool:
        return self.kind == "done"

    def fields(self) -> dict[str, object]:
        return {"status": "-" if self.status is None else self.status, "error": self.error or None}


def _ended(status: int, err: bytes | None, ok_status: Collection[int]) -> Outcome:
    if status == 0 or status in ok_status:
        return Outcome(status)
    text = (err or b"").decode(errors="replace").strip()[:ERROR_CHARS]
    return Outcome(status, printable(text), "failed")


def _not_started(exc: OSError) -> Outcome:
    return Outcome(None, str(exc.strerror or exc), "failed to start")


def _killed(timeout: float) -> Outcome:
    return Outcome(None, f"after {timeout}s", "killed")


def run_now(
    argv: list[str],
    env: dict[str, str],
    *,
    timeout: float,
    stdin: bytes = b"",
    ok_status: Collection[int] = (0,),
) -> Outcome:
    """Run ``argv`` once and wait (at most ``timeout`` seconds, then its process group
    is killed); an exit status in ``ok_status`` counts as done."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return _not_started(exc)
    try:
        _, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.communicate()
        return _killed(timeout)
    return _ended(proc.returncode, err, ok_status)


@dataclass(frozen=True)
class _Job:
    argv: list[str]
    env: dict[str, str]
    stdin: bytes
    fields: dict[str, object]


class CommandRunner:
    """Background commands of the server (see the module's text). ``name`` starts
    every log line (``alert dropped``, ``alert command killed``, ``revoke command
    done``); ``log_done``: also log each run that succeeded (INFO); ``ok_status``: the
    exit statuses that count as success."""

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        *,
        timeout: float,
        max_running: int,
        max_queued: int = 0,
        log_done: bool = False,
        ok_status: Collection[int] = (0,),
    ) -> None:
        self.name = name
        self.log = log
        self.timeout = timeout
        self.max_running = max_running
        self.max_queued = max_queued
        self.log_done = log_done
        self.ok_status = tuple(ok_status)
        self.running = 0
        self.started = 0
        self.dropped = 0
        self.failed = 0
        self._queue: deque[_Job] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        stdin: bytes = b"",
        fields: Mapping[str, object] | None = None,
    ) -> bool:
        """Start ``argv`` now, or queue it; False (and a log line) when dropped.
        ``fields`` name the run in its log line. Call from the event loop's thread."""
        fields = dict(fields or {})
        job = _Job(list(argv), env, stdin, fields)
        if self.running < self.max_running:
            self._start(job)
            return True
        if len(self._queue) < self.max_queued:
            self._queue.append(job)
            return True
        self.dropped += 1
        self.log.warning(
            "%s",
            kv(f"{self.name} dropped", running=self.running, queued=len(self._queue), **fields),
        )
        return False

    def _start(self, job: _Job) -> None:
        self.running += 1
        self.started += 1
        task = asyncio.ensure_future(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: _Job) -> None:
        try:
            outcome = await self._execute(job)
            self._report(job, outcome)
        except Exception as exc:  # never lose the slot, never crash the server
            self.log.error("%s", kv(f"{self.name} command error", error=repr(exc), **job.fields))
        finally:
            self.running -= 1
            if self._queue and self.running < self.max_running:
                self._start(self._queue.popleft())

    def _report(self, job: _Job, outcome: Outcome) -> None:
        if outcome.ok:
            if self.log_done:
                line = kv(f"{self.name} command done", **job.fields, status=outcome.status)
                self.log.info("%s", line)
            return
        self.failed += 1
        line = kv(f"{self.name} command {outcome.kind}", **job.fields, **outcome.fields())
        (self.log.error if outcome.kind == "failed to start" else self.log.warning)("%s", line)

    async def _execute(self, job: _Job) -> Outcome:
        try:
            proc = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=job.env,
                start_new_session=True,
            )
        except OSError as exc:
            return _not_started(exc)
        try:
            _, err = await asyncio.wait_for(proc.communicate(job.stdin), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            return _killed(self.timeout)
        return _ended(proc.returncode or 0, err, self.ok_status)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the commands running and queued."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tasks and loop.time() < end:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, end - loop.time()))
