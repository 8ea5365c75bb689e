"""The top senders of ``saslnetauth report``: every credential's counters in the
state store, per user and credential, messages and recipients in the sliding
hour and day.

Only a shared state store (``[state] url``) can be read from another process:
the embedded state lives in the server. The counters are read with ``SCAN`` and
one pipeline of ``HGETALL`` per batch of keys (never a blocking ``KEYS``).
"""

from __future__ import annotations

from typing import Any

from saslnetauth.sending.state import DAY, HOUR, StateError, Window

__all__ = ["parse_counter_key", "top_senders"]

_WINDOWS = {HOUR.name: HOUR, DAY.name: DAY}
_WHAT = {"msg": "messages", "rcpt": "recipients"}
#: Keys read per pipeline.
BATCH = 500


def parse_counter_key(prefix: str, key: str) -> tuple[str, str, str, Window] | None:
    """(user, credential name, "messages" | "recipients", window) of a credential
    counter key (``saslnetauth.sending.limits.counter_key``), None for another key."""
    head = f"{prefix}c:"
    if not key.startswith(head):
        return None
    size, sep, rest = key[len(head) :].partition(":")
    if not sep or not size.isdigit():
        return None
    user, rest = rest[: int(size)], rest[int(size) :]
    parts = rest.removeprefix(":").rsplit(":", 2)
    if len(parts) != 3 or parts[1] not in _WHAT or parts[2] not in _WINDOWS:
        return None
    return user, parts[0], _WHAT[parts[1]], _WINDOWS[parts[2]]


def _sum(buckets: dict[Any, Any], window: Window, now: float) -> int:
    first = window.bucket(now) - window.buckets + 1
    return sum(int(v) for b, v in buckets.items() if int(b) >= first)


async def top_senders(url: str, prefix: str, top: int, now: float) -> list[dict[str, Any]]:
    """The ``top`` credentials by messages in the last day (then the hour), with
    their four counts (raises :class:`StateError`)."""
    from redis.exceptions import RedisError

    from saslnetauth.sending.redisstate import RedisState

    state = RedisState(url)
    found: dict[tuple[str, str], dict[str, int]] = {}
    try:
        keys: list[str] = []
        async for raw in state.client.scan_iter(match=f"{prefix}c:*", count=BATCH):
            keys.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        for i in range(0, len(keys), BATCH):
            chunk = keys[i : i + BATCH]
            async with state.client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hgetall(key)
                values = await pipe.execute()
            for key, buckets in zip(chunk, values, strict=True):
                parsed = parse_counter_key(prefix, key)
                if parsed is None:
                    continue
                user, cred, noun, window = parsed
                entry = found.setdefault((user, cred), {})
                entry[f"{noun}_{window.name}"] = _sum(buckets, window, now)
    except (RedisError, OSError) as exc:
        raise StateError(f"state store: {exc}") from exc
    finally:
        await state.close()
    rows: list[dict[str, Any]] = [
        {
            "user": user,
            "credential": cred,
            **{
                f"{n}_{w}": counts.get(f"{n}_{w}", 0)
                for n in ("messages", "recipients")
                for w in ("hour", "day")
            },
        }
        for (user, cred), counts in found.items()
    ]
    rows = [r for r in rows if r["messages_day"] or r["recipients_day"]]
    rows.sort(key=lambda r: (-r["messages_day"], -r["messages_hour"], r["user"], r["credential"]))
    return rows[:top]
