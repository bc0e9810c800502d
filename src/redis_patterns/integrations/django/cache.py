"""A Django cache backend on `Cache` / `AsyncCache`: the whole Django cache API, one trip each.

```python
CACHES = {
    "default": {
        "BACKEND": "redis_patterns.integrations.django.cache.RedisPatternsCache",
        "LOCATION": "redis://127.0.0.1:6379/0",  # or "redis+cluster://h1:7000,h2:7001"
        "OPTIONS": {"LOCAL": 1000, "STAMPEDE": "lock"},
    }
}
```

Django's timeout rules hold (``None``: never expires, ``0`` or less: not stored / deleted,
default ``TIMEOUT``), as do ``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION`` and Django's key
warnings. Values are HMAC-signed pickle keyed from ``SECRET_KEY`` by default. Clients come
from the location with the library's safe defaults (no re-sent commands, finite timeouts)
and are shared by every backend instance of the process with the same configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac

from ... import _logging
from ..._async.cache import AsyncCache
from ..._core.cache_types import FOREVER, Ttl
from ..._errors import BackendError
from ..._sync.cache import Cache
from ._location import client_for

__all__ = ["RedisPatternsCache"]

log = logging.getLogger("redis_patterns.integrations.django")

_MISSING = object()
_OPTIONS = {
    "NAMESPACE",
    "SERIALIZER",
    "SECRET",
    "STAMPEDE",
    "LOCAL",
    "LOCAL_TTL",
    "FAIL_OPEN",
    "JITTER",
    "MAX_VALUE_BYTES",
    "CLIENT",
}
_LONGEST = 900  # bytes of a Django key kept as they are; longer ones are hashed (max 1 KiB)

_lock = threading.Lock()
_sync: dict[tuple[Any, ...], Cache] = {}
_Shared = tuple[Any, AsyncCache]  # an event loop's asyncio client and the cache on it
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _Shared]]
_async = weakref.WeakKeyDictionary()


def _escape(key: str) -> str:
    """A Django key as a cache key: ``%``, braces and NUL escaped (injective), long ones hashed.

    Braces would change the cluster hash tag and NUL is refused by the library; a ``%`` is
    always followed by two hex digits after escaping, so ``%H`` + a SHA-256 (for keys over
    900 bytes) never equals an escaped key.
    """
    escaped = key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace("\x00", "%00")
    if len(escaped.encode("utf-8", "surrogatepass")) > _LONGEST:
        digest = hashlib.sha256(escaped.encode("utf-8", "surrogatepass")).hexdigest()
        return "%H" + digest
    return escaped


def _client(location: str, options: dict[str, Any], asynchronous: bool) -> Any:
    return client_for(location, dict(options), asynchronous=asynchronous, what="cache LOCATION")


class RedisPatternsCache(BaseCache):  # type: ignore[misc]  # Django ships no type hints
    """Django's cache API on redis-patterns' `Cache` (sync) and `AsyncCache` (async methods).

    ``LOCATION``: ``redis://``, ``rediss://`` or ``unix://`` URL of a server, or
    ``redis+cluster://host:port,host:port`` (``rediss+cluster://`` for TLS; user and password
    as ``user:password@`` before the first node) for a cluster.

    ``OPTIONS`` (all optional):

    - ``NAMESPACE``: the `Cache` namespace (default ``"django"``; no ``:``). ``clear()``
      empties the namespace, so every alias sharing it (only ``KEY_PREFIX``/``VERSION``
      differing) is cleared together, as with Django's Redis backend (which flushes the db).
    - ``SERIALIZER``: ``"pickle"`` (default; HMAC-signed, the key derived from
      ``SECRET_KEY``), ``"json"``, ``"msgpack"`` or a `Serializer`; ``SECRET`` overrides the
      pickle key.
    - ``STAMPEDE``: ``"lock"`` or ``"xfetch"`` makes ``get_or_set`` with a callable run the
      callable once across processes per key (`Cache.get_or_load`); default ``None``.
    - ``LOCAL`` / ``LOCAL_TTL``: a near cache of that many entries per process.
    - ``FAIL_OPEN``: on a backend error, reads are misses (``get`` returns the default,
      ``get_or_set`` computes the value) and ``set``/``add``/``set_many``/``touch`` report
      failure (``False``, the failed keys) instead of raising; ``delete``, ``delete_many``,
      ``clear``, ``incr`` still raise. Logged once per minute with a count.
    - ``JITTER``: default 0 (Django's timeouts are exact); ``MAX_VALUE_BYTES``.
    - ``CLIENT``: keyword arguments for the redis-py client (``socket_timeout``, ...).
    """

    def __init__(self, server: str | list[str] | tuple[str, ...], params: dict[str, Any]) -> None:
        super().__init__(params)
        if isinstance(server, list | tuple):
            if len(server) != 1:
                raise ImproperlyConfigured(
                    "RedisPatternsCache takes one LOCATION URL; for a cluster use "
                    "'redis+cluster://host:port,host:port'"
                )
            server = server[0]
        if not isinstance(server, str) or not server:
            raise ImproperlyConfigured(
                "RedisPatternsCache needs LOCATION, e.g. 'redis://host:6379'"
            )
        options = dict(params.get("OPTIONS") or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"unknown RedisPatternsCache OPTIONS {sorted(unknown)}; known: {sorted(_OPTIONS)}"
            )
        self._location = server
        serializer = options.get("SERIALIZER", "pickle")
        secret = options.get("SECRET")
        if serializer == "pickle" and secret is None:
            secret = salted_hmac(
                "redis_patterns.integrations.django.cache", "serializer", algorithm="sha256"
            ).digest()
        self._client_options = dict(options.get("CLIENT") or {})
        self._fail_open = bool(options.get("FAIL_OPEN", False))
        self._cache_options: dict[str, Any] = {
            "namespace": options.get("NAMESPACE", "django"),
            "serializer": serializer,
            "secret": secret,
            "jitter": options.get("JITTER", 0.0),
            "stampede": options.get("STAMPEDE"),
            "local": options.get("LOCAL"),
            "local_ttl": options.get("LOCAL_TTL"),
            "fail_open": self._fail_open,
            "max_value_bytes": options.get("MAX_VALUE_BYTES", 16 * 1024 * 1024),
        }
        self._stampede = options.get("STAMPEDE") is not None
        frozen = tuple(sorted((k, repr(v)) for k, v in self._cache_options.items()))
        self._identity = (server, repr(sorted(self._client_options.items())), frozen)
        self._sync_cache: Cache | None = None

    # --- the shared Cache objects ----------------------------------------------------------

    @property
    def cache(self) -> Cache:
        """The process-wide `Cache` behind this backend (created on first use)."""
        if self._sync_cache is None:
            with _lock:
                cache = _sync.get(self._identity)
                if cache is None:
                    client = _client(self._location, self._client_options, False)
                    cache = _sync[self._identity] = Cache(client, **self._cache_options)
            self._sync_cache = cache
        return self._sync_cache

    @property
    def async_cache(self) -> AsyncCache:
        """The `AsyncCache` of the running event loop (asyncio clients belong to one loop)."""
        loop = asyncio.get_running_loop()
        with _lock:
            per_loop = _async.setdefault(loop, {})
            shared = per_loop.get(self._identity)
            if shared is None:
                client = _client(self._location, self._client_options, True)
                shared = per_loop[self._identity] = (
                    client,
                    AsyncCache(client, **self._cache_options),
                )
        return shared[1]

    # --- Django's conventions ----------------------------------------------------------------

    def _key(self, key: Any, version: int | None) -> str:
        return _escape(self.make_and_validate_key(key, version=version))

    def _ttl(self, timeout: Any) -> Ttl | None:
        """None: do not store (Django's "expire at once"); else a ttl or `FOREVER`."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return FOREVER
        if timeout <= 0:
            return None
        return max(float(timeout), 0.001)

    @contextlib.contextmanager
    def _failing_open(self, what: str) -> Iterator[None]:
        """With ``FAIL_OPEN``, log (coalesced) and swallow a backend error of a write."""
        try:
            yield
        except BackendError as exc:
            if not self._fail_open:
                raise
            _logging.coalesced(
                log,
                ("django-fail-open", self._location),
                "Django cache %r: %s failed (%s: %s); answered without the cache (FAIL_OPEN)",
                self._location,
                what,
                type(exc).__name__,
                exc,
            )

    # --- sync API ------------------------------------------------------------------------------

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("add"):
            if ttl is None:
                return not self.cache.exists(k)
            return self.cache.add(k, value, ttl)
        return False

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        value = self.cache.get(self._key(key, version), _MISSING)
        return default if value is _MISSING else value

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("set"):
            if ttl is None:
                self.cache.delete(k)
            else:
                self.cache.set(k, value, ttl)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("touch"):
            if ttl is None:
                return self.cache.delete(k)
            return self.cache.touch(k, ttl)
        return False

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self.cache.delete(self._key(key, version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        asked = {self._key(key, version): key for key in keys}
        values = self.cache.get_many(list(asked), _MISSING)
        return {
            key: value
            for key, value in zip(asked.values(), values, strict=True)
            if value is not _MISSING
        }

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        ttl = self._ttl(timeout)
        if not (self._stampede and callable(default) and ttl is not None):
            return super().get_or_set(key, default, timeout=timeout, version=version)
        value = self.cache.get_or_load(self._key(key, version), default, ttl)
        if value is None:  # get_or_load never caches None; Django's get_or_set does
            self.add(key, None, timeout=timeout, version=version)
        return value

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self.cache.exists(self._key(key, version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        value = self.cache.incr(self._key(key, version), delta, create=False)
        if value is None:
            raise ValueError(f"Key '{key}' not found")
        return value

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        items = {self._key(key, version): value for key, value in data.items()}
        ttl = self._ttl(timeout)
        with self._failing_open("set_many"):
            if ttl is None:
                self.cache.delete_many(list(items))
            else:
                self.cache.set_many(items, ttl)
            return []
        return list(data)  # FAIL_OPEN: Django's way to say which keys were not stored

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        self.cache.delete_many([self._key(key, version) for key in keys])

    def clear(self) -> None:
        self.cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: connections are pooled per process, not per request (Django calls
        this at the end of every request)."""

    # --- async API (native: the asyncio client of the running loop) ------------------------

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("add"):
            if ttl is None:
                return not await self.async_cache.exists(k)
            return await self.async_cache.add(k, value, ttl)
        return False

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        value = await self.async_cache.get(self._key(key, version), _MISSING)
        return default if value is _MISSING else value

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("set"):
            if ttl is None:
                await self.async_cache.delete(k)
            else:
                await self.async_cache.set(k, value, ttl)

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k, ttl = self._key(key, version), self._ttl(timeout)
        with self._failing_open("touch"):
            if ttl is None:
                return await self.async_cache.delete(k)
            return await self.async_cache.touch(k, ttl)
        return False

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self.async_cache.delete(self._key(key, version))

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        asked = {self._key(key, version): key for key in keys}
        values = await self.async_cache.get_many(list(asked), _MISSING)
        return {
            key: value
            for key, value in zip(asked.values(), values, strict=True)
            if value is not _MISSING
        }

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self.async_cache.exists(self._key(key, version))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        value = await self.async_cache.incr(self._key(key, version), delta, create=False)
        if value is None:
            raise ValueError(f"Key '{key}' not found")
        return value

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self.aincr(key, -delta, version=version)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        items = {self._key(key, version): value for key, value in data.items()}
        ttl = self._ttl(timeout)
        with self._failing_open("set_many"):
            if ttl is None:
                await self.async_cache.delete_many(list(items))
            else:
                await self.async_cache.set_many(items, ttl)
            return []
        return list(data)  # FAIL_OPEN: Django's way to say which keys were not stored

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        await self.async_cache.delete_many([self._key(key, version) for key in keys])

    async def aclear(self) -> None:
        await self.async_cache.clear()

    async def aclose(self, **kwargs: Any) -> None:
        """Close the running event loop's client (the next async call opens a new one).

        Connections stay pooled across requests otherwise; call this when a loop ends (an
        asyncio client belongs to the loop that created it).
        """
        with _lock:
            shared = _async.get(asyncio.get_running_loop(), {}).pop(self._identity, None)
        if shared is not None:
            await shared[1].aclose()
            await shared[0].aclose()


def _reset_for_tests() -> None:
    """Forget the shared caches (tests that restart servers; not part of the API)."""
    with _lock:
        for cache in _sync.values():
            cache.close()
        _sync.clear()
        _async.clear()
