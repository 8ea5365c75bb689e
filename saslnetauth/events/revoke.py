"""Ending the live sessions of a revoked credential: the ``[revoke] command``.

A revocation only changes the next AUTH; a session opened before (an IMAP IDLE)
lives on. So each revocation runs the admin's command once (for Dovecot
``doveadm kick {user} {network}``; none by default), with the revoked user, the app password's
label and the network in its arguments and environment (docs/revoke.md). Who runs it:

- the command line, at once and waiting for it (:func:`revoke_now`), for what it
  does: ``user app-password del``, ``user disable``, ``user passwd``, ``user del``,
  ``user net del``, and ``user kick`` by hand;
- the server, for what time does: a network grant or an app password whose
  expiry passes (:mod:`saslnetauth.serve.revokewatch`).

A suspension (not built yet) calls :func:`revoke_now` with ``event="suspended"``.
This module builds the command's arguments and environment (pure) and runs it
once (:func:`saslnetauth.events.commands.run_now`); never a shell, never a password.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from saslnetauth.events.commands import Outcome, base_environment, run_now
from saslnetauth.logfmt import kv, printable
from saslnetauth.settings import RevokeConfig

__all__ = ["EVENTS", "RevokeEvent", "kick_network", "revoke_argv", "revoke_now"]

log = logging.getLogger("saslnetauth.revoke")

#: What happened; SASLNETAUTH_EVENT.
EVENTS = (
    "app_password_deleted",
    "app_password_expired",
    "user_disabled",
    "user_deleted",
    "password_changed",
    "network_removed",
    "network_expired",
    "suspended",
    "kick",
)


def kick_network(spec: str) -> str:
    """The network a kick can be limited to: ``spec`` when it is an address or CIDR
    (``192.0.2.0/24``, ``2001:db8::/32``), else "" (``any``, ``local``, country and ASN
    terms: the whole user)."""
    try:
        net = ipaddress.ip_network(spec.strip(), strict=False)
    except ValueError:
        return ""
    if net.prefixlen == 0:
        return ""  # 0.0.0.0/0 is every session: kick by user alone
    return str(net.network_address) if net.num_addresses == 1 else str(net)


@dataclass(frozen=True)
class RevokeEvent:
    """One revocation: ``user`` (the canonical name; "" for a global network),
    ``credential`` (an app password's label, "" otherwise), ``network`` (what a
    kick may be limited to, see :func:`kick_network`; "" otherwise)."""

    event: str
    user: str
    credential: str = ""
    network: str = ""

    def values(self) -> dict[str, str]:
        return {
            "{user}": printable(self.user),
            "{credential}": printable(self.credential),
            "{network}": printable(self.network),
        }

    def fields(self) -> dict[str, object]:
        """The log line's fields."""
        return {
            "event": self.event,
            "user": self.user or None,
            "credential": self.credential or None,
            "network": self.network or None,
        }


def revoke_argv(command: list[str], event: RevokeEvent) -> list[str] | None:
    """``command`` with the placeholders replaced; an argument that is only a
    placeholder with an empty value is left out. None: nothing to run (no command, or
    an event without a user for a command that does not name the network: it would
    act on everyone)."""
    if not command:
        return None
    values = event.values()
    if not event.user and not (event.network and any("{network}" in a for a in command)):
        return None
    argv: list[str] = []
    for arg in command:
        if arg in values and not values[arg]:
            continue
        for key, value in values.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    return argv


def revoke_environment(
    event: RevokeEvent, parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """PATH, LANG and SASLNETAUTH_USER, _EVENT, _CREDENTIAL, _NETWORK."""
    values = event.values()
    return base_environment(parent) | {
        "SASLNETAUTH_USER": values["{user}"],
        "SASLNETAUTH_EVENT": event.event,
        "SASLNETAUTH_CREDENTIAL": values["{credential}"],
        "SASLNETAUTH_NETWORK": values["{network}"],
    }


def revoke_now(config: RevokeConfig, event: RevokeEvent) -> Outcome | None:
    """Run the command once for ``event`` and wait (at most ``config.timeout``); one
    log line. None: no command configured (or nothing to run for this event)."""
    argv = revoke_argv(config.command, event)
    if argv is None:
        return None
    outcome = run_now(
        argv, revoke_environment(event), timeout=config.timeout, ok_status=config.ok_status
    )
    line = kv(f"revoke command {outcome.kind}", **event.fields(), **outcome.fields())
    (log.info if outcome.ok else log.warning)("%s", line)
    return outcome
