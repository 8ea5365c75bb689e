"""What the responder hands its deciders: one :class:`Login`, and the
:class:`Decider` interface that worker processes, threads and the scheduler
in front of them share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.policy.verdict import Decision

__all__ = ["Decider", "Login"]


@dataclass(frozen=True, slots=True)
class Login:
    """One login as the responder received it; the password stays out of ``repr``.
    ``repeat``: its password repeats a recent wrong one of this client and user
    (:mod:`saslnetauth.serve.decide.repeats`), logged ``repeat=yes`` if it fails on it again.
    ``retired_by``: a wrong password may be checked against the user's retired ones
    until this monotonic time (0: not at all; a worker was free, and the failure
    deadline hides the time)."""

    user: str
    password: bytes = field(repr=False)
    rip: str | None
    service: str
    repeat: bool = False
    retired_by: float = 0.0
    #: The connecting address when it differs from the forwarded ``rip`` (Dovecot's
    #: ``real_rip``; saslnetauth.policy.proxies). None: not reported.
    real_rip: str | None = None


class Decider(Protocol):
    """Where the server's logins are decided: worker processes, or threads."""

    #: Workers (processes or threads); each decides one login at a time.
    @property
    def size(self) -> int: ...

    #: Requests it works on at once (more wait in its own queue).
    @property
    def capacity(self) -> int: ...

    async def start(self) -> None: ...

    async def decide(self, login: Login, timeout: float | None = None) -> Decision:
        """The verdict; TEMPFAIL after ``timeout`` (default ``[serve] request_timeout``)."""
        ...

    async def reload(self, cfg: Config) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...
