"""AsyncWriteThrough: write the database, then the cache; neither failure leaves a stale entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .._core.cache import WriteThroughCore
from .._core.cache_types import AsyncLoader
from .._validate import Duration
from .cache import AsyncCache

__all__ = ["AsyncWriteThrough"]

T = TypeVar("T")


class AsyncWriteThrough:
    """Write-through over an `AsyncCache`: every write goes to the database, then the cache.

    - The database write fails: the exception propagates and the cache is not touched.
    - The cache write fails after the database write: the entry is deleted instead, so the
      next read loads the new value from the database; if even that fails, `BackendError` is
      raised and the key is bypassed (read from the database) by this object until its
      invalidation succeeds.

    Args:
        cache: the cache to keep in step.
        store: ``store(key, value)`` writes the database (same flavour as the cache: a
            coroutine function for `AsyncWriteThrough`).
        remove: ``remove(key)`` deletes from the database (needed by `delete`).

    Raises:
        ConfigurationError: ``store``/``remove`` not callable or of the wrong flavour.
    """

    def __init__(
        self,
        cache: AsyncCache,
        store: Callable[..., Any],
        remove: Callable[..., Any] | None = None,
    ) -> None:
        self.cache = cache
        self._core = WriteThroughCore(cache._core, store, remove, cache._runner.asynchronous)
        self._runner = cache._runner

    async def write(self, key: str | bytes, value: Any, ttl: Duration | None = None) -> None:
        """Write ``value`` to the database, then to the cache.

        Raises:
            ConfigurationError: the cache cannot store ``value`` (checked before the database).
            Exception: what ``store`` raised (the cache is untouched).
            BackendError: the cache could neither be updated nor invalidated.
        """
        await self._runner.run(self._core.write(key, value, ttl))

    async def delete(self, key: str | bytes) -> None:
        """Delete ``key`` from the database, then from the cache (same failure rules)."""
        await self._runner.run(self._core.delete(key))

    async def read(
        self, key: str | bytes, loader: AsyncLoader[T], ttl: Duration | None = None
    ) -> T:
        """`AsyncCache.get_or_load`, except for keys whose invalidation is still pending."""
        await self._runner.run(self._core.flush_dirty())
        if self._core.cache.entry_key(key) in self._core.dirty:
            return await loader()
        return await self.cache.get_or_load(key, loader, ttl)
