"""The sending state in Redis or Valkey (``[state] url = "redis://..."``).

redis-py's asyncio client (the ``redis`` package, Redis Inc.'s own client).
Check-and-add is one Lua script (:data:`TAKE`), run atomically by the server:
every counter is a hash of bucket -> count whose old buckets the script
deletes, and which expires one window after its last use; a login link is a
string with its time to live. Nothing is kept without an expiry.

A server that does not answer within ``timeout`` is a :class:`StateError`;
the client reconnects by itself at the next call (nothing to restart).

The scripts of decisions made at the same moment go to the server together
(:class:`~saslnetauth.sending.redisbatch.ScriptBatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from saslnetauth.sending.linked import WINDOWS, LinkedTake, LinkedTaken
from saslnetauth.sending.redisbatch import ScriptBatch
from saslnetauth.sending.state import Counter, StateError, Taken, Window

__all__ = ["POOL", "TAKE", "TAKE_LINKED", "RedisState"]

#: Connections to the server at most, and seconds a decision waits for a free one.
POOL = 32
POOL_WAIT = 10.0

#: The sliding-window sum and add of both scripts: a counter is a hash of bucket ->
#: count; buckets older than the window are dropped as the sum reads them.
_WINDOW_FUNCTIONS = """
local function window_sum(key, now, width, buckets)
  local first = math.floor(now / width) - buckets + 1
  local fields = redis.call('HGETALL', key)
  local sum = 0
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) < first then
      redis.call('HDEL', key, fields[j])
    else
      sum = sum + tonumber(fields[j + 1])
    end
  end
  return sum
end
local function window_add(key, now, width, buckets, amount)
  redis.call('HINCRBY', key, math.floor(now / width), amount)
  redis.call('EXPIRE', key, width * (buckets + 1))
end
"""

#: KEYS: the counters. ARGV: now, amount, then per counter: bucket width (seconds),
#: buckets, limit (0: none). Returns {added 0/1, index of the counter over (0: none),
#: count of each counter before}.
TAKE = (
    _WINDOW_FUNCTIONS
    + """
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local sums = {}
local over = 0
for i = 1, #KEYS do
  local width = tonumber(ARGV[3 * i])
  local buckets = tonumber(ARGV[3 * i + 1])
  local limit = tonumber(ARGV[3 * i + 2])
  local sum = window_sum(KEYS[i], now, width, buckets)
  sums[i] = sum
  if over == 0 and limit > 0 and sum + amount > limit then
    over = i
  end
end
if over == 0 and amount > 0 then
  for i = 1, #KEYS do
    local width = tonumber(ARGV[3 * i])
    local buckets = tonumber(ARGV[3 * i + 1])
    window_add(KEYS[i], now, width, buckets, amount)
  end
end
local out = {over == 0 and 1 or 0, over}
for i = 1, #KEYS do
  out[#out + 1] = sums[i]
end
return out
"""
)


#: One sending decision (saslnetauth.sending.linked): the login map, then every
#: candidate's counters and the shared ones, checked and added as by TAKE.
#: KEYS: the login map, the shared counters (one per window of WINDOWS, in order).
#: ARGV: now, amount, since, cbase, tail, then per credential plan: name, own
#: hour/day limits, outside hour/day limits, suspended at (0: not). The windows'
#: names, widths and buckets are written into the script (fewer arguments to
#: encode per call). The candidates' counter keys are built here (one key per
#: credential): a single Redis or Valkey server, not Redis Cluster.
#: Returns {status (1 added, 0 over, 2 suspended), index of the counter over (0:
#: none), candidates, name and origin of each, counts or the suspended name}.
def _lua_window(w: Window) -> str:
    return f"{{'{w.name}', {w.width}, {w.buckets}}}"


TAKE_LINKED = (
    _WINDOW_FUNCTIONS
    + """
local now, amount, since = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cbase, tail = ARGV[4], ARGV[5]
local wins = {WINDOWS}
local nshared = #KEYS - 1
local plans = {}
local p = 6
while p + 5 <= #ARGV do
  plans[ARGV[p]] = {{tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])},
                    {tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4])}, tonumber(ARGV[p + 5])}
  p = p + 6
end
local function suspended_at(name)
  local plan = plans[name]
  return plan and plan[3] or 0
end
local seen, origins, times = {}, {}, {}
local fields = redis.call('HGETALL', KEYS[1])
for j = 1, #fields, 2 do
  local value = fields[j + 1]
  local bar = string.find(value, '|', 1, true)
  local t = bar and tonumber(string.sub(value, bar + 1))
  if t == nil or t < since then
    redis.call('HDEL', KEYS[1], fields[j])
  else
    seen[#seen + 1] = fields[j]
    origins[fields[j]] = string.sub(value, 1, bar - 1) == 'own' and 'own' or 'outside'
    times[fields[j]] = t
  end
end
table.sort(seen)
if #seen == 0 then
  seen = {'main'}
  origins['main'], times['main'] = 'own', 0
end
-- screen (saslnetauth.sending.linked.screen): a suspended candidate stops the
-- message unless another, working one logged in after its suspension
local names, stop = {}, nil
for _, name in ipairs(seen) do
  local at = suspended_at(name)
  if at <= 0 then
    names[#names + 1] = name
  elseif stop == nil then
    local later = false
    for _, other in ipairs(seen) do
      if other ~= name and times[other] > at and suspended_at(other) <= 0 then
        later = true
      end
    end
    if not later then
      stop = name
    end
  end
end
local out = {1, 0, #names}
for _, name in ipairs(names) do
  out[#out + 1] = name
  out[#out + 1] = origins[name]
end
if stop ~= nil then
  out[1], out[2] = 2, 0
  out[#out + 1] = stop
  return out
end
local keys, widths, buckets, limits = {}, {}, {}, {}
for _, name in ipairs(names) do
  local plan = plans[name] or plans['main']
  local which = origins[name] == 'own' and 1 or 2
  for w = 1, 2 do
    keys[#keys + 1] = cbase .. name .. tail .. wins[w][1]
    widths[#keys], buckets[#keys], limits[#keys] = wins[w][2], wins[w][3], plan[which][w]
  end
end
for i = 1, nshared do
  keys[#keys + 1] = KEYS[1 + i]
  widths[#keys], buckets[#keys], limits[#keys] = wins[i][2], wins[i][3], 0
end
local sums = {}
for i = 1, #keys do
  local sum = window_sum(keys[i], now, widths[i], buckets[i])
  sums[i] = sum
  if out[2] == 0 and limits[i] > 0 and sum + amount > limits[i] then
    out[1], out[2] = 0, i
  end
end
if out[1] == 1 and amount > 0 then
  for i = 1, #keys do
    window_add(keys[i], now, widths[i], buckets[i], amount)
  end
end
for i = 1, #keys do
  out[#out + 1] = sums[i]
end
return out
""".replace("{WINDOWS}", "{" + ", ".join(_lua_window(w) for w in WINDOWS) + "}")
)


class RedisState:
    """:class:`~saslnetauth.sending.state.SendingState` on a Redis or Valkey server."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        # one retry on a connection the server closed (a restart): a pooled
        # connection learns it is dead only when used; a retried script may count
        # once more, never less (the safe side)
        # at most POOL connections: more decisions at once wait for one (up to
        # POOL_WAIT seconds) rather than fail; redis-py's default pool refuses
        # the 101st ("Too many connections"), which deferred mail under load
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL,
            timeout=POOL_WAIT,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[ConnectionError],
            health_check_interval=30,
        )
        self.client: Any = aioredis.Redis.from_pool(pool)  # closes the pool with it
        self.scripts = ScriptBatch(self.client, {"take": TAKE, "take_linked": TAKE_LINKED})

    async def _run(self, counters: Sequence[Counter], amount: int, now: float) -> list[int]:
        args: list[str | int] = [repr(now), amount]
        for c in counters:
            args += [c.window.width, c.window.buckets, max(c.limit, 0)]
        reply = await self.scripts.call("take", [c.key for c in counters], args)
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

    async def take_linked(self, req: LinkedTake) -> LinkedTaken:
        """One decision, one round trip (:data:`TAKE_LINKED`)."""
        if [c.window for c in req.shared] != list(WINDOWS[: len(req.shared)]):
            raise ValueError("shared counters: one per window of WINDOWS, in order")
        args: list[str | int] = [repr(req.now), req.amount, repr(req.since), req.cbase, req.tail]
        for name, plan in req.plans.items():
            args += [name, *plan.own, *plan.outside, repr(plan.suspended_at)]
        keys = [req.link_key, *(c.key for c in req.shared)]
        reply = await self.scripts.call("take_linked", keys, args)
        status, index, n = int(reply[0]), int(reply[1]), int(reply[2])
        creds = tuple((_text(reply[3 + 2 * i]), _text(reply[4 + 2 * i])) for i in range(n))
        if status == 2:
            return LinkedTaken(False, creds, (), suspended=_text(reply[3 + 2 * n]))
        counts = tuple(int(v) for v in reply[3 + 2 * n :])
        return LinkedTaken(status == 1, creds, counts, index - 1, limits=req.limits_for(creds))

    async def note_login(self, key: str, name: str, value: str, ttl: int) -> None:
        """HSET and EXPIRE in one pipeline: one round trip."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(key, name, value)
                pipe.expire(key, max(ttl, 1))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StateError(f"state store: {exc}") from exc

    async def login_fields(self, key: str) -> dict[str, str]:
        try:
            found = await self.client.hgetall(key)
        except (RedisError, OSError) as exc:
            raise StateError(f"state store: {exc}") from exc
        return {_text(k): _text(v) for k, v in found.items()}

    async def close(self) -> None:
        await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
