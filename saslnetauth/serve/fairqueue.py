"""A fair queue for the scheduler (:mod:`saslnetauth.serve.scheduler`): round
robin over groups (the admitting networks), within a group round robin over
keys (client buckets), first in first out within a key. Pure, no I/O."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Round robin over groups, and within a group over keys; FIFO within a key.
    Items for which ``stale(item)`` is true when their turn comes are dropped."""

    def __init__(self, stale: Callable[[T], bool]) -> None:
        self._groups: OrderedDict[Hashable, OrderedDict[Hashable, deque[T]]] = OrderedDict()
        self._len = 0
        self._stale = stale

    def __len__(self) -> int:
        return self._len

    def push(self, group: Hashable, key: Hashable, item: T) -> None:
        keys = self._groups.get(group)
        if keys is None:
            keys = self._groups[group] = OrderedDict()
        items = keys.get(key)
        if items is None:
            items = keys[key] = deque()
        items.append(item)
        self._len += 1

    def pop(self) -> T | None:
        """The next live item in turn, or None when none is left."""
        while self._groups:
            group, keys = next(iter(self._groups.items()))
            key, items = next(iter(keys.items()))
            item = items.popleft()
            self._len -= 1
            if not items:
                del keys[key]
            else:
                keys.move_to_end(key)
            if not keys:
                del self._groups[group]
            else:
                self._groups.move_to_end(group)
            if not self._stale(item):
                return item
        return None
