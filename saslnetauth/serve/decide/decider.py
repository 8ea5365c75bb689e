"""What the responder hands its deciders: one :class:`~saslnetauth.policy.login.Login`
(the pure core's), and the :class:`Decider` interface that worker processes,
threads and the scheduler in front of them share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from saslnetauth.policy.login import Login

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.policy.verdict import Decision

__all__ = ["Decider", "Login", "MetricValue"]

#: One gauge of /metrics: (name, help text, value).
MetricValue = tuple[str, str, float]


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

    def metric_values(self) -> list[MetricValue]:
        """Its gauges for /metrics (none: an empty list)."""
        ...
