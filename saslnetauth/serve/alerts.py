"""The alerts: run an admin's command when a correct password comes from a
forbidden network (``SASLNETAUTH_EVENT=stolen_credentials``), or a failed login
used one of the user's retired passwords (``retired_password``, with
``SASLNETAUTH_ALLOWED_NETWORK`` ``yes``: from the user's own networks, most
likely a stale device; ``no``: someone elsewhere holds the old password).

The command gets the user, client address and service in the environment
(``SASLNETAUTH_EVENT``, ``SASLNETAUTH_USER``, ``SASLNETAUTH_RIP``,
``SASLNETAUTH_SERVICE``, ``SASLNETAUTH_REASON``, ``SASLNETAUTH_CREDENTIAL``: the
app password's label, empty for the main password) and as one ``key=value``
line on standard input,
never the password. The address is the canonical one (``::ffff:192.0.2.1``
becomes ``192.0.2.1``; one that does not parse is cleaned like a log
value), the other values are cleaned too (no control characters, no NUL),
and the environment holds only ``PATH``, ``LANG`` and these variables:
nothing of the server's own environment (such as a database URL) leaks.
It runs in the background with a time limit (killed after ``timeout``
seconds) and at most ``max_running`` at once (more are dropped with a log
line); its slot is given back whatever happens, so it can neither block,
crash nor switch off the server's alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from saslnetauth.logfmt import kv, printable
from saslnetauth.netrules import parse_address

__all__ = ["AlertRunner", "alert_environment"]

log = logging.getLogger("saslnetauth.alert")

#: PATH when the server has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def alert_environment(
    user: str,
    rip: str | None,
    service: str,
    reason: str,
    parent: dict[str, str] | None = None,
    credential: str | None = None,
    event: str = "stolen_credentials",
    allowed_network: bool | None = None,
) -> dict[str, str]:
    """The whole environment of the alert command: PATH, LANG and SASLNETAUTH_*."""
    source = os.environ if parent is None else parent
    addr = parse_address(rip)
    env = {
        "PATH": source.get("PATH") or DEFAULT_PATH,
        "SASLNETAUTH_EVENT": event,
        "SASLNETAUTH_USER": printable(user),
        "SASLNETAUTH_RIP": str(addr) if addr is not None else printable(rip or ""),
        "SASLNETAUTH_SERVICE": printable(service),
        "SASLNETAUTH_REASON": printable(reason),
        "SASLNETAUTH_CREDENTIAL": printable(credential or ""),
    }
    if allowed_network is not None:
        env["SASLNETAUTH_ALLOWED_NETWORK"] = "yes" if allowed_network else "no"
    if source.get("LANG"):
        env["LANG"] = printable(source["LANG"])
    return env


class AlertRunner:
    def __init__(self, command: list[str], *, timeout: float = 10.0, max_running: int = 4) -> None:
        self.command = command
        self.timeout = timeout
        self.max_running = max_running
        self.running = 0
        self.fired = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(
        self,
        user: str,
        rip: str | None,
        service: str,
        reason: str,
        credential: str | None = None,
        *,
        event: str = "stolen_credentials",
        allowed_network: bool | None = None,
    ) -> None:
        """Start the command in the background (never awaits it)."""
        if not self.command:
            return
        if self.running >= self.max_running:
            self.dropped += 1
            log.warning(
                "%s",
                kv(
                    "alert dropped",
                    user=user,
                    rip=rip or "-",
                    credential=credential,
                    running=self.running,
                ),
            )
            return
        self.running += 1
        self.fired += 1
        env = alert_environment(
            user,
            rip,
            service,
            reason,
            credential=credential,
            event=event,
            allowed_network=allowed_network,
        )
        task = asyncio.ensure_future(self._run(env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, env: dict[str, str]) -> None:
        try:
            await self._execute(env)
        except Exception as exc:  # never lose the slot, never crash the server
            log.error("%s", kv("alert command error", error=repr(exc)))
        finally:
            self.running -= 1

    async def _execute(self, env: dict[str, str]) -> None:
        allowed = env.get("SASLNETAUTH_ALLOWED_NETWORK")
        line = kv(
            env["SASLNETAUTH_EVENT"].replace("_", " "),
            user=env["SASLNETAUTH_USER"],
            rip=env["SASLNETAUTH_RIP"] or "-",
            service=env["SASLNETAUTH_SERVICE"],
            reason=env["SASLNETAUTH_REASON"],
            credential=env["SASLNETAUTH_CREDENTIAL"] or None,
            allowed_network=allowed,
        )
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
            log.error("%s", kv("alert command failed to start", error=exc.strerror or str(exc)))
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate((line + "\n").encode()), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            log.warning("%s", kv("alert command killed", after=f"{self.timeout}s"))
            return
        if proc.returncode:
            log.warning(
                "%s",
                kv(
                    "alert command failed",
                    status=proc.returncode,
                    error=err.decode(errors="replace").strip()[:200] or None,
                ),
            )

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
