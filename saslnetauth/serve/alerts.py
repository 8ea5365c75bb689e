"""The stolen-credentials alert: run an admin's command when a correct password
comes from a forbidden network.

The command gets the user, client address and service in the environment
(``SASLNETAUTH_USER``, ``SASLNETAUTH_RIP``, ``SASLNETAUTH_SERVICE``,
``SASLNETAUTH_REASON``) and as one ``key=value`` line on standard input,
never the password. It runs in the background with a time limit (killed
after ``timeout`` seconds) and at most ``max_running`` at once (more are
dropped with a log line), so it can neither block nor crash the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from saslnetauth.logfmt import kv

__all__ = ["AlertRunner"]

log = logging.getLogger("saslnetauth.alert")


class AlertRunner:
    def __init__(self, command: list[str], *, timeout: float = 10.0, max_running: int = 4) -> None:
        self.command = command
        self.timeout = timeout
        self.max_running = max_running
        self.running = 0
        self.fired = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, user: str, rip: str | None, service: str, reason: str) -> None:
        """Start the command in the background (never awaits it)."""
        if not self.command:
            return
        if self.running >= self.max_running:
            self.dropped += 1
            log.warning("%s", kv("alert dropped", user=user, rip=rip or "-", running=self.running))
            return
        self.running += 1
        self.fired += 1
        task = asyncio.ensure_future(self._run(user, rip, service, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, user: str, rip: str | None, service: str, reason: str) -> None:
        env = dict(os.environ)
        env.update(
            SASLNETAUTH_USER=user,
            SASLNETAUTH_RIP=rip or "",
            SASLNETAUTH_SERVICE=service,
            SASLNETAUTH_REASON=reason,
        )
        line = kv("stolen credentials", user=user, rip=rip or "-", service=service, reason=reason)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.running -= 1
            log.error("%s", kv("alert command failed to start", error=exc.strerror or str(exc)))
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate((line + "\n").encode()), self.timeout)
            if proc.returncode:
                log.warning(
                    "%s",
                    kv(
                        "alert command failed",
                        status=proc.returncode,
                        error=err.decode(errors="replace").strip()[:200] or None,
                    ),
                )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            log.warning("%s", kv("alert command killed", after=f"{self.timeout}s"))
        except Exception as exc:
            log.error("%s", kv("alert command error", error=repr(exc)))
        finally:
            self.running -= 1

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
