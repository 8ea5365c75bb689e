"""The brute-force brake's failure counts in Redis or Valkey (``[state] url``), shared
by every ``saslnetauth serve`` that uses the same server, so that guesses spread over
several MX hosts are slowed as if they hit one (docs/sending.md, "Several MX hosts").

One string counter per client network (``PREFIX bf:c:4:BITS``, the bucket of
:func:`~saslnetauth.serve.decide.penalty.client_bucket`) and per user name
(``PREFIX bf:u:NAME``): a failure is ``INCR`` then ``EXPIRE`` (the penalty box's
expiry, from the last failure, like :class:`~saslnetauth.serve.decide.penalty.PenaltyBox`),
a verified success ``DEL``\\ s its client's counter. What one login does after its
decision is one :class:`Step`, sent as one ``MULTI``/``EXEC`` transaction (atomic:
the user's count is read before the increment in the same step). Every key expires.

The client is redis-py's asyncio client, given by the caller
(:mod:`saslnetauth.serve.decide.sharedbrake`); its errors pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_NAME", "SharedPenalties", "Step", "client_name", "user_name"]

#: Characters of a user name its key holds (the repeat memory's bound too).
MAX_NAME = 256


@dataclass(frozen=True, slots=True)
class Step:
    """What one decision does to the brakes (pure): clear the client's count (a
    verified success), count a failure against the client (``client``), read the
    user's count (``user``) and count a failure against it (``user_fail``)."""

    client: tuple[int, int] | None = None
    clear: bool = False
    user: str | None = None
    user_fail: bool = False

    @property
    def empty(self) -> bool:
        return self.client is None and self.user is None


def client_name(prefix: str, key: tuple[int, int]) -> str:
    """The key of a client network: IP version and network bits (hex)."""
    return f"{prefix}bf:c:{key[0]}:{key[1]:x}"


def user_name(prefix: str, user: str) -> str:
    return f"{prefix}bf:u:{user[:MAX_NAME]}"


class SharedPenalties:
    """The operations on one Redis server (``client``: a ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, prefix: str, expire: float) -> None:
        self.client = client
        self.prefix = prefix
        self.expire = max(int(expire), 1)

    async def client_failures(self, key: tuple[int, int]) -> int:
        """The failures counted against a client network by every host (one GET)."""
        value = await self.client.get(client_name(self.prefix, key))
        return int(value) if value is not None else 0

    async def settle(self, step: Step) -> int:
        """Apply ``step`` in one transaction; the user's failures before it (0 when
        ``step.user`` is None)."""
        if step.empty:
            return 0
        pipe = self.client.pipeline(transaction=True)
        if step.user is not None:
            name = user_name(self.prefix, step.user)
            pipe.get(name)
            if step.user_fail:
                pipe.incr(name)
                pipe.expire(name, self.expire)
        if step.client is not None:
            name = client_name(self.prefix, step.client)
            if step.clear:
                pipe.delete(name)
            else:
                pipe.incr(name)
                pipe.expire(name, self.expire)
        replies = await pipe.execute()
        if step.user is None or replies[0] is None:
            return 0
        return int(replies[0])

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
