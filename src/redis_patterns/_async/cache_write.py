"""AsyncWriteThrough and AsyncWriteBehind: keep a database and the cache in step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .._core.cache_types import AsyncLoader
from .._core.cache_write import FlushResult, WriteBehindCore, WriteThroughCore
from .._core.replication import check_wait_replicas
from .._validate import Duration
from .cache import AsyncCache

__all__ = ["AsyncWriteBehind", "AsyncWriteThrough"]

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
        self,
        key: str | bytes,
        loader: AsyncLoader[T],
        ttl: Duration | None = None,
    ) -> T:
        """`AsyncCache.get_or_load`, except for keys whose invalidation is still pending."""
        await self._runner.run(self._core.flush_dirty())
        if self._core.cache.entry_key(key) in self._core.dirty:
            return await loader()
        return await self.cache.get_or_load(key, loader, ttl)


class AsyncWriteBehind:
    """Write-behind over an `AsyncCache`: writes go to the cache now, to the database later.

    `write` stores the value in the cache and appends it to a Redis stream in one script (one
    round trip; on a Cluster, where the two keys live in different slots, the stream entry is
    written first, then the cache: two round trips). A flusher (`run` or `flush_once`, in any
    process) reads the stream with a consumer group in batches, keeps the last write of each
    key, calls ``flush(batch)``, and only then acknowledges. A flusher that dies mid-batch
    loses nothing: its unacknowledged entries are reclaimed (``XAUTOCLAIM``) after
    ``claim_idle`` by another flusher. Delivery is at least once, and a reclaimed batch can
    reach the database after a newer one: store `PendingWrite.version` and refuse older ones.
    A batch that keeps failing moves to the dead-letter stream after ``max_attempts``.

    Args:
        cache: the cache written to.
        flush: ``flush(batch: list[PendingWrite])`` writes the database (same flavour as the
            cache: a coroutine function for `AsyncWriteBehind`); raising means "retry later".
        batch_size: stream entries read per cycle.
        interval: pause after a batch that was not full (more time = more coalescing).
        claim_idle: how long an entry may stay unacknowledged before another flusher takes it.
        max_attempts: deliveries after which an entry goes to the dead letters.
        group: the consumer group's name.
        wait_replicas: acknowledge a `write` only once this many replicas confirmed the queued
            entry (``WAIT``, pipelined with the script: still one round trip; at most 1 s),
            else raise `NotReplicatedError`, so a failover cannot silently drop a write the
            caller was told about. Standalone and Sentinel clients only.

    Raises:
        ConfigurationError: an invalid argument (before any I/O).
    """

    def __init__(
        self,
        cache: AsyncCache,
        flush: Callable[..., Any],
        *,
        batch_size: int = 100,
        interval: Duration = 1.0,
        claim_idle: Duration = 30.0,
        max_attempts: int = 5,
        group: str = "flushers",
        wait_replicas: int = 0,
    ) -> None:
        self.cache = cache
        self._runner = cache._runner
        waits = check_wait_replicas(wait_replicas, cluster=self._runner.cluster)
        self._core = WriteBehindCore(
            cache._core,
            flush,
            batch_size=batch_size,
            interval=interval,
            claim_idle=claim_idle,
            max_attempts=max_attempts,
            group=group,
            asynchronous=self._runner.asynchronous,
            wait_replicas=waits,
        )

    @property
    def stats(self) -> dict[str, int]:
        """This process's counters: written, read, flushed (after coalescing), dead, failures
        (of ``flush``), backend_errors (cycles of `run` lost to an unreachable server)."""
        return dict(self._core.stats)

    async def write(self, key: str | bytes, value: Any, ttl: Duration | None = None) -> str:
        """Store ``value`` in the cache and queue it for the database; returns the entry id.

        Raises:
            ConfigurationError: ``value`` cannot be serialized (nothing is sent).
        """
        self.cache._ensure_listener()
        return await self._runner.run(self._core.write(key, value, ttl, self._runner.cluster))

    async def flush_once(self, consumer: str) -> FlushResult:
        """One flusher cycle as ``consumer``: read a batch, coalesce, flush, acknowledge."""
        return await self._runner.run(self._core.flush_once(consumer))

    async def run(self, consumer: str, *, max_cycles: int | None = None) -> None:
        """Flush until `stop` is called (or ``max_cycles`` cycles ran).

        Rides out a server that is away (connection refused or broken, ``LOADING`` after a
        restart, no reply in time) with backoff (0.05 s doubling to 2 s), logging a warning
        each time, as `Worker.run` does; entries it had read but not acknowledged are flushed
        again after ``claim_idle``. Other errors (a bad script, missing permissions) propagate.
        """
        self._core.stopping = False
        await self._runner.run(self._core.run(consumer, max_cycles))

    def stop(self) -> None:
        """Make `run` return after its current cycle."""
        self._core.stopping = True

    async def pending(self) -> int:
        """How many writes are not flushed yet."""
        return await self._runner.run(self._core.pending())
