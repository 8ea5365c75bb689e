"""What ``saslnetauth sending show`` prints: limits, their source, counts, suspension."""

from __future__ import annotations

from typing import Any

from saslnetauth.config import Config
from saslnetauth.sending.limits import counter_key, credential_name, effective_limits
from saslnetauth.sending.logins import LoginLink
from saslnetauth.sending.state import DAY, HOUR, Counter, StateError, Window
from saslnetauth.store.sending import CredentialLimits, SendingRow

__all__ = ["explain"]

_COUNTERS = {
    "messages_per_hour": ("msg", HOUR),
    "recipients_per_hour": ("rcpt", HOUR),
    "messages_per_day": ("msg", DAY),
    "recipients_per_day": ("rcpt", DAY),
}


async def explain(cfg: Config, row: SendingRow, now: float) -> dict[str, Any]:
    """The documented ``sending show --json`` shape."""
    state = None
    counts_from = "the running server (embedded state: not readable here)"
    if cfg.state.url:
        from saslnetauth.sending.redisstate import RedisState

        state = RedisState(cfg.state.url, timeout=cfg.state.timeout)
        counts_from = "state store " + cfg.state.url.split("@")[-1]
    creds: list[tuple[str | None, CredentialLimits]] = [(None, row.main)]
    creds += sorted(row.apps.items())
    out = []
    try:
        for label, own in creds:
            link = LoginLink(label)
            limits, suspended = effective_limits(cfg.sending, row, link)
            outside, _ = effective_limits(cfg.sending, row, LoginLink(label, "outside"))
            items: dict[str, Any] = {}
            for key, (what, window) in _COUNTERS.items():
                count = None
                if state is not None:
                    key_ = counter_key(cfg.state.prefix, "c", row.user, label, what, window)
                    count = await _count(state, key_, window, now)
                    if count is None:
                        counts_from = "state store unavailable"
                source = "own" if own.limits.get(key) is not None else "default"
                if label is not None and source == "default" and row.main.limits.get(key):
                    source = "the user's"
                items[key] = {
                    "limit": limits[key],
                    "outside": outside[key],
                    "source": source,
                    "count": count,
                }
            out.append(
                {"credential": credential_name(label), "suspended": suspended, "limits": items}
            )
    finally:
        if state is not None:
            await state.close()
    return {"user": row.user, "counts_from": counts_from, "credentials": out}


async def _count(state: Any, key: str, window: Window, now: float) -> int | None:
    try:
        (n,) = await state.peek([Counter(key, window)], now)
    except StateError:
        return None
    return int(n)
