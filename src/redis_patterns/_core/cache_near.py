"""The near cache: an in-process LRU of raw entries, invalidated over pub/sub."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["NearCache"]


class NearCache:
    """An in-process LRU of raw entries in front of Redis, invalidated by pub/sub messages.

    It serves nothing while its invalidation subscription is down (`healthy` false), and a read
    that began before an invalidation never stores its (possibly older) result: each read
    notes the `generation` first, and `put` drops the entry if any invalidation came since.
    """

    def __init__(
        self, size: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.max_age = max_age
        self.healthy = False
        self.generation = 0
        self.hits = 0
        self.invalidations = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()

    def get(self, key: bytes) -> bytes | None:
        """The payload stored for ``key`` if still valid, else None."""
        with self._lock:
            if not self.healthy:
                return None
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: bytes, payload: bytes, ttl: float, generation: int) -> None:
        """Store ``payload`` unless an invalidation arrived since ``generation`` was read."""
        with self._lock:
            if not self.healthy or generation != self.generation or ttl <= 0:
                return
            self._data[key] = (payload, self._clock() + min(ttl, self.max_age))
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def invalidate(self, key: bytes) -> None:
        """Forget ``key`` (a set or delete happened somewhere)."""
        with self._lock:
            self.generation += 1
            self.invalidations += 1
            self._data.pop(key, None)

    def clear(self) -> None:
        """Forget every entry (a `clear` of the namespace happened somewhere)."""
        with self._lock:
            self.generation += 1
            self.invalidations += 1
            self._data.clear()

    def set_healthy(self, healthy: bool) -> None:
        """The subscription came up or went down: messages may have been missed, forget all."""
        with self._lock:
            self.generation += 1
            self._data.clear()
            self.healthy = healthy

    def __len__(self) -> int:
        return len(self._data)
