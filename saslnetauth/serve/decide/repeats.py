"""Which wrong passwords a login repeats: a stale device is not an attack. Pure.

After a password change one phone that keeps retrying the old password is
one mistake, not a thousand guesses. Like Dovecot (which skips
``auth_penalty`` when a user and password repeat one of the last ten
attempts), the responder remembers keyed digests of the last
:data:`REMEMBER` wrong passwords per (client, user) and per user across
clients; a failure whose password is among them does not grow the
matching brake (:mod:`saslnetauth.serve.decide.penalty`) and is logged
``repeat=yes``, which the shipped fail2ban filter ignores. So the brakes
count *distinct* wrong passwords: per client (over the names it tries,
which is what password spraying, one password over many users, shows) and
per user (over the clients, which is what many sources on one user show).

A digest is an HMAC-SHA256, cut to 8 bytes, of the password under a key
drawn at start and never written anywhere (one process holds it: the
responder, where the password arrives; the digest never leaves it), so
neither the memory nor a core dump of it gives a password or lets one be
tested offline. Memory is bounded: at most ``max_entries`` (client, user)
pairs and as many users, least recently failed first out, each forgotten
``expire`` seconds after its last failure.

The reply and the moment it leaves never depend on this: the penalties a
failure waits are read before its password is looked at. Only the growth of
the brake for later requests differs, which tells a client no more than
that it sent the same password again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["DIGEST_SIZE", "REMEMBER", "RepeatMemory", "Repeats"]

#: Wrong passwords remembered per (client, user) and per user (Dovecot: ten).
REMEMBER = 10
#: Bytes of each kept digest.
DIGEST_SIZE = 8


@dataclass(frozen=True, slots=True)
class Repeats:
    """Whether one login's password repeats a recent wrong one (decided before it runs)."""

    digest: bytes
    #: ... of this client for this user (the client brake, ``repeat=yes``)
    client: bool
    #: ... of this user from any client (the user brake)
    user: bool


class _Recent:
    """Digests of the last :data:`REMEMBER` wrong passwords per key, LRU-bounded."""

    def __init__(self, max_entries: int, expire: float) -> None:
        self.max_entries = max_entries
        self.expire = expire
        self._entries: OrderedDict[Hashable, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, key: Hashable, digest: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if now - entry[1] > self.expire:
            del self._entries[key]
            return False
        kept = entry[0]
        return any(kept[i : i + DIGEST_SIZE] == digest for i in range(0, len(kept), DIGEST_SIZE))

    def add(self, key: Hashable, digest: bytes, now: float) -> None:
        entry = self._entries.pop(key, None)
        kept = b"" if entry is None or now - entry[1] > self.expire else entry[0]
        # the newest first; one already kept moves to the front instead of doubling
        rest = [kept[i : i + DIGEST_SIZE] for i in range(0, len(kept), DIGEST_SIZE)]
        rest = [d for d in rest if d != digest][: REMEMBER - 1]
        self._entries[key] = (digest + b"".join(rest), now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def trim(self, max_entries: int) -> None:
        self.max_entries = max_entries
        while len(self._entries) > max_entries:
            self._entries.popitem(last=False)


class RepeatMemory:
    """The recent wrong passwords of the responder's clients and users."""

    def __init__(
        self, *, max_entries: int = 100_000, expire: float = 3600.0, key: bytes | None = None
    ) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._pairs = _Recent(max_entries, expire)
        self._users = _Recent(max_entries, expire)
        #: Failures that repeated a recent wrong password of their client and user.
        self.repeated = 0

    def __len__(self) -> int:
        return len(self._pairs)

    def retune(self, max_entries: int) -> None:
        """A reload: the new bound, keeping what is remembered."""
        self._pairs.trim(max_entries)
        self._users.trim(max_entries)

    def digest(self, password: bytes) -> bytes:
        return hmac.new(self._key, password, hashlib.sha256).digest()[:DIGEST_SIZE]

    def check(self, client: Hashable, user: str, password: bytes, now: float) -> Repeats:
        """Is ``password`` a recent wrong password of ``user`` from ``client`` / at all?"""
        d = self.digest(password)
        return Repeats(
            d, self._pairs.holds((client, user), d, now), self._users.holds(user, d, now)
        )

    def remember(
        self, client: Hashable, user: str, seen: Repeats, now: float, *, for_user: bool
    ) -> None:
        """A login with ``seen``'s password failed on a wrong password: keep its digest
        for the pair, and for the user when it counted towards the user brake."""
        if seen.client:
            self.repeated += 1
        self._pairs.add((client, user), seen.digest, now)
        if for_user:
            self._users.add(user, seen.digest, now)
