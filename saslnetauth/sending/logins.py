"""The link from a Postfix session to the credential that authenticated it.

A policy request names the SASL user and the client address, not the
credential. So the responder notes every allowed login (user, credential,
what admitted it, client address, time) under ``(user, client address)`` for
``[sending] login_window`` seconds, in the state store (this process, or Redis
for every host), and the policy server takes the most recent one. None found
(a login on a host that does not share the store, a restart of the embedded
state): the user's main password, admitted by its own networks.

The responder's note never delays or fails a login: it is written in the
background, at most :data:`MAX_PENDING` at once (more are dropped and logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from saslnetauth.logfmt import kv
from saslnetauth.policy.model import normalize_username
from saslnetauth.policy.rules.netrules import parse_address
from saslnetauth.policy.suspension import OUTSIDE, OWN
from saslnetauth.policy.verdict import Decision
from saslnetauth.sending.state import SendingState, StateError

__all__ = ["LoginLink", "LoginLinks", "link_key"]

log = logging.getLogger("saslnetauth.sending")

#: Notes being written at once (Redis); more are dropped.
MAX_PENDING = 1000


@dataclass(frozen=True, slots=True)
class LoginLink:
    """The credential of a session: None for the main password, else an app
    password's label; ``origin`` "own" or "outside"; ``found`` whether a login was seen."""

    credential: str | None
    origin: str = OWN
    found: bool = False


def link_key(prefix: str, user: str, client_address: str) -> str:
    addr = parse_address(client_address)
    where = str(addr) if addr is not None else "-"
    return f"{prefix}login:{len(user)}:{user}:{where}"


def _encode(decision: Decision) -> str:
    origin = OUTSIDE if decision.admitted != OWN else OWN
    return f"{origin}|{time.time():.0f}|{decision.credential or ''}"


def _decode(value: str) -> LoginLink:
    origin, _, rest = value.partition("|")
    _, _, label = rest.partition("|")
    return LoginLink(label or None, OWN if origin == OWN else OUTSIDE, True)


class LoginLinks:
    def __init__(
        self, state: SendingState, prefix: str, ttl: int, *, lowercase: bool = True
    ) -> None:
        self.state = state
        self.prefix = prefix
        self.ttl = ttl
        self.lowercase = lowercase
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def note(self, decision: Decision, rip: str | None) -> None:
        """After an OK (called on the event loop; returns at once)."""
        if not decision.ok or not rip:
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        key = link_key(self.prefix, decision.user, rip)
        task = asyncio.get_running_loop().create_task(self._put(key, _encode(decision)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _put(self, key: str, value: str) -> None:
        try:
            await self.state.put_link(key, value, self.ttl)
        except StateError as exc:
            log.warning("%s", kv("login link not stored", error=str(exc)))

    async def find(self, user: str, client_address: str) -> LoginLink:
        """The link of the latest allowed login (raises :class:`StateError`)."""
        try:
            name = normalize_username(user, lowercase=self.lowercase)
        except ValueError:
            return LoginLink(None)
        value = await self.state.get_link(link_key(self.prefix, name, client_address))
        return LoginLink(None) if value is None else _decode(value)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
