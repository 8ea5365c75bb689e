"""The sending state in Redis or Valkey (``[state] url = "redis://..."``).

redis-py's asyncio client (the ``redis`` package, Redis Inc.'s own client).
Check-and-add is one Lua script (:data:`TAKE`), run atomically by the server:
every counter is a hash of bucket -> count whose old buckets the script
deletes, and which expires one window after its last use; a login link is a
string with its time to live. Nothing is kept without an expiry.

A server that does not answer within ``timeout`` is a :class:`StateError`;
the client reconnects by itself at the next call (nothing to restart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from saslnetauth.sending.state import Counter, StateError, Taken

__all__ = ["TAKE", "RedisState"]

#: KEYS: the counters. ARGV: now, amount, then per counter: bucket width (seconds),
#: buckets, limit (0: none). Returns {added 0/1, index of the counter over (0: none),
#: count of each counter before}.
TAKE = """
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local sums = {}
local over = 0
for i = 1, #KEYS do
  local width = tonumber(ARGV[3 * i])
  local buckets = tonumber(ARGV[3 * i + 1])
  local limit = tonumber(ARGV[3 * i + 2])
  local first = math.floor(now / width) - buckets + 1
  local fields = redis.call('HGETALL', KEYS[i])
  local sum = 0
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) < first then
      redis.call('HDEL', KEYS[i], fields[j])
    else
      sum = sum + tonumber(fields[j + 1])
    end
  end
  sums[i] = sum
  if over == 0 and limit > 0 and sum + amount > limit then
    over = i
  end
end
if over == 0 and amount > 0 then
  for i = 1, #KEYS do
    local width = tonumber(ARGV[3 * i])
    local buckets = tonumber(ARGV[3 * i + 1])
    redis.call('HINCRBY', KEYS[i], math.floor(now / width), amount)
    redis.call('EXPIRE', KEYS[i], width * (buckets + 1))
  end
end
local out = {over == 0 and 1 or 0, over}
for i = 1, #KEYS do
  out[#out + 1] = sums[i]
end
return out
"""


class RedisState:
    """:class:`~saslnetauth.sending.state.SendingState` on a Redis or Valkey server."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        # one retry on a connection the server closed (a restart): a pooled
        # connection learns it is dead only when used; a retried script may count
        # once more, never less (the safe side)
        self.client: Any = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[ConnectionError],
            health_check_interval=30,
        )
        self._take = self.client.register_script(TAKE)

    async def _run(self, counters: Sequence[Counter], amount: int, now: float) -> list[int]:
        args: list[str | int] = [repr(now), amount]
        for c in counters:
            args += [c.window.width, c.window.buckets, max(c.limit, 0)]
        try:
            reply = await self._take(keys=[c.key for c in counters], args=args)
        except (RedisError, OSError) as exc:
            raise StateError(f"state store: {exc}") from exc
        return [int(v) for v in reply]

    async def take(self, counters: Sequence[Counter], amount: int, now: float) -> Taken:
        reply = await self._run(counters, amount, now)
        return Taken(reply[0] == 1, tuple(reply[2:]), reply[1] - 1)

    async def peek(self, counters: Sequence[Counter], now: float) -> tuple[int, ...]:
        return tuple((await self._run(counters, 0, now))[2:])

    async def put_link(self, key: str, value: str, ttl: int) -> None:
        try:
            await self.client.set(key, value, ex=max(ttl, 1))
        except (RedisError, OSError) as exc:
            raise StateError(f"state store: {exc}") from exc

    async def get_link(self, key: str) -> str | None:
        try:
            value = await self.client.get(key)
        except (RedisError, OSError) as exc:
            raise StateError(f"state store: {exc}") from exc
        return None if value is None else bytes(value).decode("utf-8", "replace")

    async def close(self) -> None:
        await self.client.aclose()
