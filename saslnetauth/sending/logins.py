"""The link from a Postfix session to the credential that authenticated it.

A policy request names the SASL user and the client address, not the
credential. So the responder notes every allowed login in a map per ``(user,
client address)``: credential name -> what admitted it and when, kept
``[sending] login_window`` seconds after the last login, in the state store
(this process, or Redis for every host). The policy server counts a message
against every credential of that map still inside the window
(:mod:`saslnetauth.sending.linked`: behind one NAT address two credentials
cannot be told apart, so the tightest limit decides). None found (a login on a
host that does not share the store, a restart of the embedded state): the
user's main password, admitted by its own networks.

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
from saslnetauth.policy.suspension import OWN
from saslnetauth.policy.verdict import Decision
from saslnetauth.sending.linked import link_value
from saslnetauth.sending.state import SendingState, StateError

__all__ = ["LoginLink", "LoginLinks", "logins_key"]

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


def logins_key(prefix: str, user: str, client_address: str) -> str:
    """The login map of (user, client address): credential name -> origin|time."""
    addr = parse_address(client_address)
    where = str(addr) if addr is not None else "-"
    return f"{prefix}logins:{len(user)}:{user}:{where}"


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
        key = logins_key(self.prefix, decision.user, rip)
        name = "main" if decision.credential is None else f"app:{decision.credential}"
        value = link_value(str(decision.admitted), time.time())
        task = asyncio.get_running_loop().create_task(self._put(key, name, value))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def key(self, user: str, client_address: str) -> str:
        """The login map a policy request of ``user`` from ``client_address`` reads."""
        try:
            name = normalize_username(user, lowercase=self.lowercase)
        except ValueError:
            name = user
        return logins_key(self.prefix, name, client_address)

    async def _put(self, key: str, name: str, value: str) -> None:
        try:
            await self.state.note_login(key, name, value, self.ttl)
        except StateError as exc:
            log.warning("%s", kv("login link not stored", error=str(exc)))

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
