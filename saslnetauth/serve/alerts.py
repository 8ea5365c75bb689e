"""The alert command: run an admin's command on an event worth a human's look.

Events (``SASLNETAUTH_EVENT``): ``stolen_credentials``, a correct password from
a forbidden network; ``new_location``, an allowed login from a place the user
(or that app password) was not seen at (:mod:`saslnetauth.policy.locations`), which
also sets ``SASLNETAUTH_NEW_LOCATION`` (``network``, ``country``, ``asn``, comma
separated), ``SASLNETAUTH_COUNTRY`` and ``SASLNETAUTH_ASN`` (empty when not known).
``retired_password``, a failed login with one of the user's retired passwords,
which also sets ``SASLNETAUTH_ALLOWED_NETWORK`` (``yes``: from the user's own
networks, most likely a stale device; ``no``: someone elsewhere holds the old
password).

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
crash nor switch off the server's alerts (:class:`saslnetauth.events.commands.CommandRunner`,
shared with the revoke command).
"""

from __future__ import annotations

import logging
import os

from saslnetauth.events.commands import CommandRunner, base_environment
from saslnetauth.logfmt import kv, printable
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision

__all__ = [
    "NEW_LOCATION",
    "RETIRED_PASSWORD",
    "STOLEN_CREDENTIALS",
    "SUSPENDED",
    "AlertRunner",
    "alert_environment",
]

log = logging.getLogger("saslnetauth.alert")

STOLEN_CREDENTIALS = "stolen_credentials"
NEW_LOCATION = "new_location"
RETIRED_PASSWORD = "retired_password"  # noqa: S105 - an event name
#: A credential suspended for sending too much (saslnetauth.sending.limits).
SUSPENDED = "suspended"
#: The first words of the line on standard input, per event.
_HEADLINES = {
    STOLEN_CREDENTIALS: "stolen credentials",
    NEW_LOCATION: "new location",
    RETIRED_PASSWORD: "retired password",
    SUSPENDED: "credential suspended",
}


def alert_environment(
    user: str,
    login: Login,
    reason: str,
    parent: dict[str, str] | None = None,
    credential: str | None = None,
    event: str = STOLEN_CREDENTIALS,
    details: dict[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of the alert command: PATH, LANG and SASLNETAUTH_*
    (``details``: more SASLNETAUTH_* of the event, cleaned like the rest)."""
    source = os.environ if parent is None else parent
    addr = login.address
    env = base_environment(source)
    env |= {
        "SASLNETAUTH_USER": printable(user),
        "SASLNETAUTH_RIP": str(addr) if addr is not None else printable(login.rip or ""),
        "SASLNETAUTH_SERVICE": printable(login.service),
        "SASLNETAUTH_REASON": printable(reason),
        "SASLNETAUTH_CREDENTIAL": printable(credential or ""),
        "SASLNETAUTH_EVENT": printable(event),
    }
    for key, value in (details or {}).items():
        env[f"SASLNETAUTH_{key.upper()}"] = printable(value)
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
        self,
        user: str,
        login: Login,
        reason: str,
        credential: str | None = None,
        *,
        event: str = STOLEN_CREDENTIALS,
        details: dict[str, str] | None = None,
    ) -> None:
        """Start the command in the background (never awaits it)."""
        if not self.command:
            return
        env = alert_environment(
            user, login, reason, credential=credential, event=event, details=details
        )
        line = kv(
            _HEADLINES.get(event, event),
            user=env["SASLNETAUTH_USER"],
            rip=env["SASLNETAUTH_RIP"] or "-",
            service=env["SASLNETAUTH_SERVICE"],
            reason=env["SASLNETAUTH_REASON"],
            credential=env["SASLNETAUTH_CREDENTIAL"] or None,
            new_location=env.get("SASLNETAUTH_NEW_LOCATION"),
            country=env.get("SASLNETAUTH_COUNTRY") or None,
            asn=env.get("SASLNETAUTH_ASN") or None,
            allowed_network=env.get("SASLNETAUTH_ALLOWED_NETWORK"),
        )
        self.runner.submit(
            self.command,
            env,
            stdin=(line + "\n").encode(),
            fields={
                "event": event,
                "user": env["SASLNETAUTH_USER"],
                "rip": env["SASLNETAUTH_RIP"] or "-",
                "credential": env["SASLNETAUTH_CREDENTIAL"] or None,
            },
        )

    def stolen_credentials(self, decision: Decision, login: Login) -> None:
        """The alert of a correct password from a forbidden network."""
        self.fire(decision.user, login, decision.reason.value, decision.credential)

    def retired_password(self, decision: Decision, login: Login) -> None:
        """The alert of a failed login with a retired password."""
        self.fire(
            decision.user,
            login,
            decision.reason.value,
            event=RETIRED_PASSWORD,
            details={"allowed_network": "yes" if decision.network_ok else "no"},
        )

    def new_location(self, decision: Decision, login: Login) -> None:
        """The alert of an OK from a new place (``decision.new_location`` set)."""
        details = {
            "new_location": decision.new_location or "",
            "country": decision.country or "",
            "asn": str(decision.asn) if decision.asn is not None else "",
        }
        self.fire(
            decision.user,
            login,
            decision.reason.value,
            decision.credential,
            event=NEW_LOCATION,
            details=details,
        )

    async def drain(self, timeout: float) -> None:
        await self.runner.drain(timeout)
