"""The stolen-credentials alert: run an admin's command when a correct password
comes from a forbidden network.

The command gets the user, client address and service in the environment
(``SASLNETAUTH_USER``, ``SASLNETAUTH_RIP``, ``SASLNETAUTH_SERVICE``,
``SASLNETAUTH_REASON``, ``SASLNETAUTH_CREDENTIAL``: the app password's label,
empty for the main password) and as one ``key=value`` line on standard input,
never the password. The address is the canonical one (``::ffff:192.0.2.1``
becomes ``192.0.2.1``; one that does not parse is cleaned like a log
value), the other values are cleaned too (no control characters, no NUL),
and the environment holds only ``PATH``, ``LANG`` and these variables:
nothing of the server's own environment (such as a database URL) leaks.
It runs in the background with a time limit (killed after ``timeout``
seconds) and at most ``max_running`` at once (more are dropped with a log
line); its slot is given back whatever happens, so it can neither block,
crash nor switch off the server's alerts (:class:`saslnetauth.commands.CommandRunner`,
shared with the revoke command).
"""

from __future__ import annotations

import logging
import os

from saslnetauth.commands import CommandRunner, base_environment
from saslnetauth.logfmt import kv, printable
from saslnetauth.netrules import parse_address

__all__ = ["AlertRunner", "alert_environment"]

log = logging.getLogger("saslnetauth.alert")


def alert_environment(
    user: str,
    rip: str | None,
    service: str,
    reason: str,
    parent: dict[str, str] | None = None,
    credential: str | None = None,
) -> dict[str, str]:
    """The whole environment of the alert command: PATH, LANG and SASLNETAUTH_*."""
    source = os.environ if parent is None else parent
    addr = parse_address(rip)
    env = base_environment(source)
    env |= {
        "SASLNETAUTH_USER": printable(user),
        "SASLNETAUTH_RIP": str(addr) if addr is not None else printable(rip or ""),
        "SASLNETAUTH_SERVICE": printable(service),
        "SASLNETAUTH_REASON": printable(reason),
        "SASLNETAUTH_CREDENTIAL": printable(credential or ""),
    }
    return env


class AlertRunner:
    def __init__(self, command: list[str], *, timeout: float = 10.0, max_running: int = 4) -> None:
        self.command = command
        self.runner = CommandRunner("alert", log, timeout=timeout, max_running=max_running)

    # counters of /metrics (a reload carries them over to the new runner)
    @property
    def fired(self) -> int:
        return self.runner.started

    @fired.setter
    def fired(self, value: int) -> None:
        self.runner.started = value

    @property
    def dropped(self) -> int:
        return self.runner.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self.runner.dropped = value

    @property
    def running(self) -> int:
        return self.runner.running

    def fire(
        self, user: str, rip: str | None, service: str, reason: str, credential: str | None = None
    ) -> None:
        """Start the command in the background (never awaits it)."""
        if not self.command:
            return
        env = alert_environment(user, rip, service, reason, credential=credential)
        line = kv(
            "stolen credentials",
            user=env["SASLNETAUTH_USER"],
            rip=env["SASLNETAUTH_RIP"] or "-",
            service=env["SASLNETAUTH_SERVICE"],
            reason=env["SASLNETAUTH_REASON"],
            credential=env["SASLNETAUTH_CREDENTIAL"] or None,
        )
        self.runner.submit(
            self.command,
            env,
            stdin=(line + "\n").encode(),
            fields={
                "user": env["SASLNETAUTH_USER"],
                "rip": env["SASLNETAUTH_RIP"] or "-",
                "credential": env["SASLNETAUTH_CREDENTIAL"] or None,
            },
        )

    async def drain(self, timeout: float) -> None:
        await self.runner.drain(timeout)
