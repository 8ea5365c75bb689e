"""A fair queue for the scheduler (:mod:`saslnetauth.serve.decide.scheduler`). Pure, no I/O.

Items are pushed with a *group* (the owner: a user and the credential tried)
and a *key* (the client bucket). The queue is fair in both at once, by
start-time fair queueing in two dimensions: the queue's virtual time is the
tag of the item last taken; a group's next item counts one more than the
larger of the virtual time and the group's previous item, and so does a
key's; an item's tag is the larger of its two counts, and items are taken
smallest tag first, ties in arrival order. So a group or a key with many items
waiting gets one turn in each round, as any other: the guesses for one user
from a thousand addresses delay another user's login by one turn, and so do
the guesses of one machine for a thousand names. A newcomer's first item is
taken within one round of the groups and keys that are waiting.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Fair in groups and in keys (module doc); FIFO within a group and key. Items for
    which ``stale(item)`` is true when their turn comes are dropped."""

    def __init__(self, stale: Callable[[T], bool]) -> None:
        self._heap: list[tuple[int, int, Hashable, Hashable, T]] = []
        self._seq = itertools.count()
        self._vt = 0
        #: Count of the last item pushed per group and per key (while it is ahead of
        #: the virtual time; forgotten once it no longer counts).
        self._groups: dict[Hashable, int] = {}
        self._keys: dict[Hashable, int] = {}
        self._stale = stale

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, group: Hashable, key: Hashable, item: T) -> None:
        g = self._groups[group] = 1 + max(self._vt, self._groups.get(group, 0))
        k = self._keys[key] = 1 + max(self._vt, self._keys.get(key, 0))
        heapq.heappush(self._heap, (max(g, k), next(self._seq), group, key, item))

    def pop(self) -> T | None:
        """The next live item in turn, or None when none is left."""
        while self._heap:
            tag, _, group, key, item = heapq.heappop(self._heap)
            self._vt = tag
            # bounded memory: a count not ahead of the virtual time is as good as none
            if self._groups.get(group, 0) <= tag:
                self._groups.pop(group, None)
            if self._keys.get(key, 0) <= tag:
                self._keys.pop(key, None)
            if not self._stale(item):
                return item
        return None
