"""AsyncCache: cache-aside with stampede protection, near cache and warming; one trip a hit."""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

from .._core.cache import CacheCore
from .._core.cache_keys import KeyBuilder
from .._core.cache_types import (
    AsyncBatchLoader,
    AsyncFunc,
    AsyncLoader,
    Stampede,
    Ttl,
    WarmResult,
    check_callable,
)
from .._flight import AsyncSingleFlight
from .._runner import AsyncClient, AsyncRunner, require_bytes_replies
from .._serializers import Serializer
from .._validate import Duration
from .pubsub import AsyncSubscriber

__all__ = ["AsyncCache", "AsyncCachedFunction"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class AsyncCache:
    """A Redis cache: values under ``{cache:<namespace>:<key>}``, serialized, with a TTL.

    `get_or_load` is cache-aside with stampede protection: within this process one loader runs
    per key at a time (single-flight), and across processes ``stampede`` decides:

    - ``"lock"``: on a miss one caller takes a short recompute lock and loads; the others wait
      briefly and read its result. Past the soft expiry the entry is still kept for
      ``stale_ttl``: every caller gets that stale value at once while one refreshes it in the
      background (stale-while-revalidate); a failing refresh keeps the stale value.
    - ``"xfetch"``: as ``"lock"``, and in addition each read may refresh early, with a
      probability that rises as expiry nears and with the loader's stored duration (Vattani et
      al., VLDB 2015), decided on the server's clock.
    - ``None``: no cross-process protection (still single-flight in the process).

    A hit is one round trip (``MGET`` + ``TIME`` pipelined, judged here on the server's clock;
    one ``EVALSHA`` on a cluster); with ``local=N`` a hit in the in-process near cache is none,
    and writes anywhere invalidate every process's near cache over pub/sub. Bulk operations
    (`get_many`, `set_many`, `delete_many`, `get_or_load_many`) take one round trip per node;
    `clear` empties the namespace in O(1) round trips (a generation counter, see the docs).

    Args:
        client: a redis-py asyncio client (standalone or cluster).
        namespace: prefix of every key (no ``:``, ``{``, ``}``).
        ttl: seconds a value stays fresh (shortened by up to ``jitter`` at random).
        serializer: ``"json"`` (default), ``"msgpack"``, ``"pickle"`` (needs ``secret``; values
            are HMAC-signed) or a `Serializer`. Each entry records it: an entry written by
            another serializer is a logged miss, never mis-decoded.
        jitter: fraction in [0, 1) by which each entry's ttl is randomly shortened, so keys
            written together do not expire together.
        stampede: ``"lock"``, ``"xfetch"`` or ``None`` (see above).
        local: size of an in-process LRU near cache (``None``: no near cache).
        secret: the HMAC key for ``serializer="pickle"``.
        beta: xfetch's eagerness (> 0; 1 is the paper's optimum, more refreshes earlier).
        lock_ttl: lifetime of the recompute lock; make it longer than the slowest load.
        wait_timeout: how long a caller waits for another process's load before raising
            `LockTimeoutError` (default ``lock_ttl + 1``: long enough to outlive a dead holder).
        stale_ttl: how long an entry is kept past its soft expiry to be served stale
            (default ``ttl / 2`` with stampede protection, 0 without).
        negative_ttl: cache a loader's ``None`` for this long (default: ``None`` is not cached).
        error_backoff: after a loader fails, no process retries that key for this long.
        local_ttl: the longest a near-cache entry is served (default ``ttl``).
        max_value_bytes: the largest serialized value `set` accepts.
        invalidations: publish an invalidation on every write (default), so near caches in
            other processes drop the key; turn off only if no process uses ``local``.
        fail_open: on a backend error (server down, timeout), reads answer without the cache:
            `get` returns the default, `get_or_load` and cached functions run the loader (its
            result is returned, not stored); one coalesced warning per minute says how many.
            Writes (`set`, `delete`, `incr`, `clear`, ...) still raise: a lost write or
            invalidation is never silent.
        rng: the random source for jitter and xfetch (for reproducible tests).

    Raises:
        ConfigurationError: an invalid argument (before any I/O).
        TypeError: a client of the other flavour (sync vs asyncio) than this class.
    """

    def __init__(
        self,
        client: AsyncClient,
        namespace: str = "cache",
        ttl: Duration = 3600,
        *,
        serializer: str | Serializer = "json",
        jitter: float = 0.1,
        stampede: Stampede = "lock",
        local: int | None = None,
        secret: bytes | str | None = None,
        beta: float = 1.0,
        lock_ttl: Duration = 10.0,
        wait_timeout: Duration | None = None,
        stale_ttl: Duration | None = None,
        negative_ttl: Duration | None = None,
        error_backoff: Duration = 1.0,
        local_ttl: Duration | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        invalidations: bool = True,
        fail_open: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._runner = AsyncRunner(client)
        self._core = CacheCore(
            namespace,
            ttl,
            serializer=serializer,
            secret=secret,
            jitter=jitter,
            stampede=stampede,
            local=local,
            local_ttl=local_ttl,
            beta=beta,
            lock_ttl=lock_ttl,
            wait_timeout=wait_timeout,
            stale_ttl=stale_ttl,
            negative_ttl=negative_ttl,
            error_backoff=error_backoff,
            max_value_bytes=max_value_bytes,
            invalidations=invalidations,
            fail_open=fail_open,
            cluster=self._runner.cluster,
            rng=rng,
            lean_hits=not self._runner.cluster,
            asynchronous=self._runner.asynchronous,
            flights=AsyncSingleFlight(),
            spawn=self._runner.spawn,
        )
        require_bytes_replies(
            self._runner,
            "the cache stores binary payloads (msgpack, signed pickle, any serializer's bytes)",
        )
        # The near cache's invalidation channel, read in the background (see _ensure_listener).
        self._listener: AsyncSubscriber | None = None

    @property
    def namespace(self) -> str:
        """The namespace every key of this cache lives under."""
        return self._core.namespace.decode()

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this process (best effort under many threads): hits, misses, loads,
        load_errors, refreshes, early_refreshes, stale_served, malformed, backend_errors
        (answered open), near-cache hits."""
        near = self._core.near
        extra = (
            {"near_hits": near.hits, "near_size": len(near), "invalidations": near.invalidations}
            if near is not None
            else {}
        )
        return {**self._core.stats, **extra}

    @property
    def local_ready(self) -> bool:
        """Whether the near cache is serving: its invalidation subscription is up.

        The subscription starts with the first operation; until it is confirmed (and after a
        lost connection, until it is back) every read goes to Redis.
        """
        return self._core.near is not None and self._core.near.healthy

    def key_of(self, key: str | bytes) -> bytes:
        """The Redis key holding ``key``'s entry (see the docs' key layout: it differs on a
        cluster, where the hash tag is one of the namespace's buckets)."""
        return self._core.entry_key(key)

    def _ensure_listener(self) -> None:
        """Subscribe to the near cache's invalidations, in the background, once.

        The near cache serves only while subscribed: ``on_state`` empties it on every change
        (messages may have been missed in between) and says whether it may serve.
        """
        if self._core.near is None:
            return
        if self._listener is not None and not self._listener.background_running:
            # Its thread or task is gone (e.g. its event loop was closed): whatever it would
            # have told us is lost, so forget the near cache and subscribe again.
            self._core.on_subscription_state(False)
            self._listener = None
        if self._listener is None:
            self._listener = AsyncSubscriber(
                self._runner.clients[0],
                [self._core.channel],
                on_state=self._core.on_subscription_state,
            )
            self._listener.run_in_background(self._core.on_message)

    async def get(self, key: str | bytes, default: Any = None) -> Any:
        """The fresh value of ``key``, or ``default`` (miss, expired, or an unreadable entry).

        One round trip (``MGET`` + ``TIME``; ``EVALSHA`` on a cluster); none when the near
        cache has it.
        """
        self._ensure_listener()
        return await self._runner.run(self._core.get(key, default))

    async def set(self, key: str | bytes, value: Any, ttl: Ttl | None = None) -> None:
        """Store ``value`` (one ``EVALSHA``); loads that began earlier will not overwrite it.

        ``ttl``: seconds (default: the cache's), or `FOREVER` for an entry that never expires.

        Raises:
            ConfigurationError: ``value`` cannot be serialized (the message names its type), or
                is larger than ``max_value_bytes``; ``ttl`` invalid. Nothing is sent.
        """
        self._ensure_listener()
        await self._runner.run(self._core.set(key, value, ttl))

    async def add(self, key: str | bytes, value: Any, ttl: Ttl | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no fresh value (one ``EVALSHA``, atomic).

        Returns:
            Whether it was stored.
        """
        self._ensure_listener()
        return await self._runner.run(self._core.set(key, value, ttl, only_absent=True))

    async def incr(
        self, key: str | bytes, delta: int = 1, *, ttl: Ttl | None = None, create: bool = True
    ) -> int | None:
        """Add ``delta`` to the integer stored at ``key``, atomically (one ``EVALSHA``).

        The entry keeps its expiry. A missing (or expired, or cleared) key is created holding
        ``delta`` with ``ttl`` (default: the cache's), unless ``create=False``: then nothing is
        stored and None is returned.

        Returns:
            The new value (None: missing and ``create=False``).

        Raises:
            CacheValueError: the stored value is not an integer, or the result would leave
                ±(2**53 - 1); the entry is unchanged.
            ConfigurationError: ``delta`` not an int or beyond ±(2**53 - 1) (before any I/O).
        """
        self._ensure_listener()
        return await self._runner.run(self._core.incr(key, delta, ttl, create))

    async def decr(
        self, key: str | bytes, delta: int = 1, *, ttl: Ttl | None = None, create: bool = True
    ) -> int | None:
        """`incr` by ``-delta``."""
        if isinstance(delta, int) and not isinstance(delta, bool):
            delta = -delta
        return await self.incr(key, delta, ttl=ttl, create=create)

    async def touch(self, key: str | bytes, ttl: Ttl | None = None) -> bool:
        """Give ``key`` a new ttl from now (default: the cache's; `FOREVER`: none).

        Returns:
            Whether ``key`` held a fresh value (nothing is created otherwise).
        """
        self._ensure_listener()
        return await self._runner.run(self._core.touch(key, ttl))

    async def exists(self, key: str | bytes) -> bool:
        """Whether ``key`` holds a fresh value (one ``EVALSHA``; the value is not sent)."""
        self._ensure_listener()
        return await self._runner.run(self._core.exists(key))

    async def delete(self, key: str | bytes) -> bool:
        """Delete ``key`` everywhere (Redis, and every process's near cache).

        When it returns, this process no longer serves the old value, and a load that began
        before it cannot store what it read. Returns whether a fresh value existed.
        """
        self._ensure_listener()
        return await self._runner.run(self._core.delete(key))

    async def get_many(self, keys: Iterable[str | bytes], default: Any = None) -> list[Any]:
        """The values of ``keys``, in the order asked (``default`` for each miss).

        One round trip: one ``EVALSHA`` per 500 keys on a standalone server; on a cluster one
        pipeline per node, with one ``EVALSHA`` per hash-tag bucket (see the docs' key layout).
        """
        self._ensure_listener()
        return await self._runner.run(self._core.get_many(keys, default))

    async def set_many(
        self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]], ttl: Ttl | None = None
    ) -> None:
        """Store several values (like `set`, each with its own jitter) in one round trip per node.

        Raises:
            ConfigurationError: a key or value is invalid or unserializable: checked for all
                of them before anything is sent.
            BackendError: on a cluster, the nodes that answered have stored their part.
        """
        self._ensure_listener()
        await self._runner.run(self._core.set_many(items, ttl))

    async def delete_many(self, keys: Iterable[str | bytes]) -> int:
        """Delete several keys (like `delete`) in one round trip per node.

        Returns:
            How many held a fresh value.
        """
        self._ensure_listener()
        return await self._runner.run(self._core.delete_many(keys))

    async def clear(self) -> None:
        """Empty the namespace: every entry becomes a miss, in O(1) round trips.

        One ``EVALSHA`` standalone; on a cluster one pipeline per node (the `BUCKETS`
        generation counters) and one ``PUBLISH``. Old entries are not deleted one by one:
        each is deleted when next read, or expires with its ttl (one stored with `FOREVER`
        stays in memory until its key is read or written again).
        """
        await self._runner.run(self._core.clear())

    async def get_or_load(
        self,
        key: str | bytes,
        loader: AsyncLoader[T],
        ttl: Ttl | None = None,
    ) -> T:
        """The cached value of ``key``, loading and storing ``loader()`` on a miss.

        Args:
            key: the cache key.
            loader: a callable with no arguments (``functools.partial`` binds some), of this
                class's flavour: a coroutine function for `AsyncCache`, a plain one for `Cache`.
            ttl: this entry's ttl (default: the cache's).

        Returns:
            The value: fresh, or stale while one caller refreshes it in the background.

        Raises:
            ConfigurationError: bad ``key``/``ttl``, ``loader`` not callable or not async
                (before any I/O); an unserializable loaded value.
            LockTimeoutError: another process held the recompute lock past ``wait_timeout``.
            Exception: what ``loader`` raised, when no stale value could be served.
        """
        self._ensure_listener()
        value: T = await self._runner.run(self._core.get_or_load(key, loader, ttl))
        return value

    async def get_or_load_many(
        self,
        keys: Iterable[str | bytes],
        loader: AsyncBatchLoader[Any],
        ttl: Ttl | None = None,
    ) -> list[Any]:
        """The cached values of ``keys`` (in the order asked), loading only the misses at once.

        One read per node takes the recompute lock of every miss; ``loader(missing_keys)``
        (one call) returns a mapping of key to value for them, stored in one round trip per
        node. Keys another process is loading are read again until it stored them. A key the
        mapping lacks (or maps to None) is None in the result and not cached (unless
        ``negative_ttl``). Stale values are served at once and refreshed in the background.

        Raises:
            ConfigurationError: bad keys or ``ttl``, ``loader`` not callable or of the wrong
                flavour (before any I/O); the loader returned no mapping.
            LockTimeoutError: another process held a key's recompute lock past ``wait_timeout``.
            Exception: what ``loader`` raised.
        """
        self._ensure_listener()
        return await self._runner.run(self._core.get_or_load_many(keys, loader, ttl))

    def cached(
        self, ttl: Ttl | None = None, key: str | Callable[..., str] | None = None
    ) -> Callable[[AsyncFunc[P, R]], AsyncCachedFunction[P, R]]:
        """Decorator: cache a function's results by its arguments (via `get_or_load`).

        The function must be of this class's flavour (coroutine function for `AsyncCache`).

        Args:
            ttl: entries' ttl (default: the cache's).
            key: the key, as a format string over the parameters (``"user:{user_id}"``) or a
                function of the same arguments; default: the function's qualified name plus a
                hash of its type-tagged, signature-bound arguments (``self``/``cls`` left out).

        The result has ``.invalidate(*args, **kwargs)``, ``.set(value, *args, **kwargs)``,
        ``.refresh(*args, **kwargs)`` and ``.key(*args, **kwargs)``.
        """
        self._core.check_ttl(ttl)

        def decorate(func: AsyncFunc[P, R]) -> AsyncCachedFunction[P, R]:
            check_callable(func, "function", asynchronous=self._runner.asynchronous)
            return AsyncCachedFunction(self, func, KeyBuilder(func, key), ttl)

        return decorate

    async def warm(
        self,
        items: Mapping[Any, Any] | Iterable[Any],
        *,
        loader: Callable[[list[Any]], Any] | None = None,
        ttl: Duration | None = None,
        batch_size: int = 100,
        progress: Callable[[int, int], Any] | None = None,
    ) -> WarmResult:
        """Pre-load entries in pipelined batches (one round trip per batch).

        Args:
            items: a mapping of key to value, ``(key, value)`` pairs, or keys with ``loader``.
            loader: given a list of keys, returns a mapping of key to value (a batch query).
            ttl: entries' ttl (default: the cache's).
            batch_size: keys per batch (and per round trip).
            progress: called as ``progress(done, total)`` after each batch.

        Returns:
            `WarmResult`: how many were stored, and skipped because a loader was busy on them.
        """
        if loader is not None:
            check_callable(loader, "loader", asynchronous=self._runner.asynchronous)
        return await self._runner.run(self._core.warm(items, loader, ttl, batch_size, progress))

    async def aclose(self) -> None:
        """Stop the near cache's invalidation listener (the client stays open)."""
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None

    async def __aenter__(self) -> AsyncCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncCachedFunction(Generic[P, R]):
    """A function wrapped by `AsyncCache.cached`: call it; `invalidate`, `set` or `refresh`
    the entry of one argument set."""

    def __init__(
        self,
        cache: AsyncCache,
        func: AsyncFunc[P, R],
        builder: KeyBuilder,
        ttl: Ttl | None,
    ) -> None:
        self._cache = cache
        self._func = func
        self._builder = builder
        self._ttl = ttl
        self._bound: tuple[Any, ...] = ()
        functools.update_wrapper(self, func)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key these arguments map to."""
        return self._builder((*self._bound, *args), kwargs)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        full = (*self._bound, *args)
        loader = functools.partial(self._func, *full, **kwargs)
        return await self._cache.get_or_load(self._builder(full, kwargs), loader, self._ttl)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Delete the entry for these arguments; returns whether one existed."""
        return await self._cache.delete(self.key(*args, **kwargs))

    async def set(self, value: R, *args: Any, **kwargs: Any) -> None:
        """Store ``value`` as the result for these arguments (e.g. after a database write)."""
        await self._cache.set(self.key(*args, **kwargs), value, self._ttl)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now, store its result for these arguments and return it.

        A None result deletes the entry instead, unless the cache has ``negative_ttl`` (as in
        `get_or_load`, None is not cached otherwise).
        """
        key = self.key(*args, **kwargs)
        value = await self._func(*self._bound, *args, **kwargs)
        if value is None and self._cache._core.negative_ms is None:
            await self._cache.delete(key)
        else:
            await self._cache.set(key, value, self._ttl)
        return value

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        bound = copy.copy(self)
        bound._bound = (instance,)
        return bound
