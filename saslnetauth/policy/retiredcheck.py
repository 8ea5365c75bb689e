"""Does a wrong password match one of the user's retired passwords? (issue 25)

Called by the engine after the main password failed, only when the server
says a worker is free and only while the failure deadline leaves room for
another hash (``until``, on the monotonic clock shared with the server): the
reply and the moment it leaves stay those of any wrong password. At most
:data:`saslnetauth.store.retired.CHECKED` hashes, the newest first; a row that
does not parse is skipped (it can only have come from a stored hash, which was
valid once), and a database error means "no match": this is a signal, never
a reason to fail differently.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import BackendError, InvalidHashError
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import Store

__all__ = ["matching_retired", "record_tried"]

log = logging.getLogger("saslnetauth.auth")


class RetiredSource(Protocol):
    """What the check reads (the engine has it): the store, the hasher and ``[alerts]
    retired_days``."""

    store: Store
    hasher: PasswordHasher
    retired_days: int


def matching_retired(
    engine: RetiredSource, user_id: int, secret: bytes, *, until: float, estimate: float
) -> list[int]:
    """[the row id of the retired password ``secret`` matches], or []. A hash is
    started only when ``estimate`` seconds (the main verification's) still end
    before ``until``; ``engine.retired_days`` says how far back."""
    days, hasher = engine.retired_days, engine.hasher
    if days <= 0 or time.monotonic() + estimate >= until:
        return []
    try:
        rows = engine.store.retired_hashes(user_id, days)
    except Exception as exc:  # a signal only: never fails the login differently
        log.warning("%s", kv("retired passwords unreadable", error=str(exc)[:200]))
        return []
    for row_id, stored in rows:
        if time.monotonic() + estimate >= until:
            return []
        try:
            if hasher.verify(secret, hasher.parse(stored)):
                return [row_id]
        except (InvalidHashError, BackendError):
            continue
    return []


def record_tried(store: Store, row_id: int) -> None:
    """Note the use for ``user show`` (after the reply); never fails a login."""
    try:
        store.retired_tried(row_id)
    except Exception as exc:
        log.warning("%s", kv("retired password use not recorded", error=str(exc)[:200]))
