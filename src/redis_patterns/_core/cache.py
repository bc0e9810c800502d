"""Cache's logic: cache-aside with stampede protection (lock, xfetch), a near cache, warming."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import random
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .._errors import BackendError, ConfigurationError, LockTimeoutError
from .._keys import check_name, make_key
from .._logging import coalesced, error_kind
from .._plan import Call, Command, Eval, Now, Pipeline, Plan, Sleep
from .._script import package_script
from .._serializers import Serializer, get_serializer
from .._validate import Duration, check_int, duration_ms
from .reconnect import TRANSIENT, reconnect_backoff

__all__ = [
    "CacheCore",
    "KeyBuilder",
    "NearCache",
    "FlushResult",
    "PendingWrite",
    "WarmResult",
    "WriteBehindCore",
    "WriteThroughCore",
    "check_callable",
]

log = logging.getLogger("redis_patterns.cache")

T = TypeVar("T")

Stampede = Literal["lock", "xfetch"] | None

_MODES = {None: 3, "lock": 1, "xfetch": 2}  # 0 is a plain read (get)
_MISS, _FRESH, _STALE, _EARLY, _MALFORMED = 0, 1, 2, 3, -1
_TAG = re.compile(r"^[A-Za-z0-9_.+-]{1,32}$")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class WarmResult:
    """What `Cache.warm` did: entries written, and skipped because a loader held their key."""

    stored: int
    skipped: int


def _is_async_callable(func: object) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def check_callable(func: object, what: str, *, asynchronous: bool) -> None:
    """Refuse, before any I/O, a non-callable, or a sync/async callable given to the wrong API."""
    if not callable(func):
        raise ConfigurationError(f"{what} must be callable, not {type(func).__name__}")
    is_async = _is_async_callable(func)
    if asynchronous and not is_async:
        raise ConfigurationError(
            f"{what} {func!r} is not an async function; the async cache awaits it (a blocking "
            "function would stall the event loop): pass an `async def`, or use the sync Cache"
        )
    if not asynchronous and is_async:
        raise ConfigurationError(
            f"{what} {func!r} is an async function; use AsyncCache, or pass a plain function"
        )


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

    def set_healthy(self, healthy: bool) -> None:
        """The subscription came up or went down: messages may have been missed, forget all."""
        with self._lock:
            self.generation += 1
            self._data.clear()
            self.healthy = healthy

    def __len__(self) -> int:
        return len(self._data)


_SCALARS = (type(None), bool, int, float, str, bytes)


def _canon(value: object, out: list[str]) -> None:
    """Append a type-tagged, unambiguous encoding of ``value`` (so 1, 1.0, "1", (1,) differ)."""
    if value is None:
        out.append("N")
    elif isinstance(value, bool):
        out.append("T" if value else "F")
    elif isinstance(value, int):
        out.append(f"i{value};")
    elif isinstance(value, float):
        out.append(f"f{value!r};")
    elif isinstance(value, str):
        out.append(f"s{len(value)}:{value}")
    elif isinstance(value, bytes):
        out.append(f"b{len(value)}:{value.hex()}")
    elif isinstance(value, tuple | list):
        out.append("t(" if isinstance(value, tuple) else "l(")
        for item in value:
            _canon(item, out)
        out.append(")")
    elif isinstance(value, dict):
        parts = []
        for k, v in value.items():
            sub: list[str] = []
            _canon(k, sub)
            _canon(v, sub)
            parts.append("".join(sub))
        out.append("d(" + "".join(sorted(parts)) + ")")
    elif isinstance(value, set | frozenset):
        items = []
        for item in value:
            sub = []
            _canon(item, sub)
            items.append("".join(sub))
        out.append("S(" + "".join(sorted(items)) + ")")
    else:
        raise ConfigurationError(
            f"cannot build a cache key from an argument of type {type(value).__name__}; "
            "pass key= to @cached (a format string or a function of the same arguments)"
        )


class KeyBuilder:
    """Builds a stable, collision-free cache key from a function's arguments.

    Arguments are bound to the signature (so ``f(1, b=2)`` and ``f(1, 2)`` agree, defaults
    filled in), a leading ``self``/``cls`` is left out, and each value is encoded with its type
    (``1``, ``1.0``, ``"1"`` and ``True`` give different keys). The encoding is hashed (SHA-256)
    so any argument, braces included, makes a valid key. ``key`` may instead be a format string
    over the argument names (``"user:{user_id}"``) or a function of the same arguments.
    """

    def __init__(self, func: Callable[..., Any], key: str | Callable[..., str] | None) -> None:
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters)
        self.skip = params[0] if params and params[0] in ("self", "cls") else None
        self.prefix = f"{func.__module__}.{func.__qualname__}"
        if key is not None and not isinstance(key, str) and not callable(key):
            raise ConfigurationError(
                f"key must be a format string or a callable, not {type(key).__name__}"
            )
        self.key = key

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if callable(self.key):
            built = self.key(*args, **kwargs)
            if not isinstance(built, str):
                raise ConfigurationError(f"key function returned {type(built).__name__}, not str")
            return built
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.prefix}(): {exc}") from None
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != self.skip}
        if isinstance(self.key, str):
            return self.key.format(**arguments)
        out: list[str] = []
        for name, value in arguments.items():
            out.append(f"{name}=")
            _canon(value, out)
        digest = hashlib.sha256("".join(out).encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self.prefix}:{digest}"


class CacheCore:
    """Validated configuration and the plans shared by `Cache` and `AsyncCache`."""

    def __init__(
        self,
        namespace: str,
        ttl: Duration,
        *,
        serializer: str | Serializer,
        secret: bytes | str | None,
        jitter: float,
        stampede: Stampede,
        local: int | None,
        local_ttl: Duration | None,
        beta: float,
        lock_ttl: Duration,
        wait_timeout: Duration | None,
        stale_ttl: Duration | None,
        negative_ttl: Duration | None,
        error_backoff: Duration,
        max_value_bytes: int,
        invalidations: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        ns = check_name(namespace, "namespace")
        if b":" in ns:
            raise ConfigurationError(
                f"namespace must not contain ':' (got {namespace!r}): 'a' + key 'b:c' would "
                "collide with namespace 'a:b' + key 'c'; use '.' or '-', e.g. 'users.v2'"
            )
        self.namespace = ns
        self.ttl_ms = duration_ms(ttl, "ttl")
        self.serializer = get_serializer(serializer, secret=secret)
        if not _TAG.match(self.serializer.name):
            raise ConfigurationError(
                f"serializer name {self.serializer.name!r} must match {_TAG.pattern} "
                "(it is stored in each entry to detect values written by another serializer)"
            )
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise ConfigurationError(f"jitter must be a number, not {type(jitter).__name__}")
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be in [0, 1), got {jitter!r}")
        self.jitter = float(jitter)
        if stampede not in _MODES:
            raise ConfigurationError(f"stampede must be 'lock', 'xfetch' or None, got {stampede!r}")
        self.stampede = stampede
        self.mode = _MODES[stampede]
        if isinstance(beta, bool) or not isinstance(beta, int | float):
            raise ConfigurationError(f"beta must be a number, not {type(beta).__name__}")
        if not (beta > 0 and math.isfinite(beta)):
            raise ConfigurationError(f"beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)
        self.lock_ttl_ms = duration_ms(lock_ttl, "lock_ttl")
        self.wait_timeout = (
            self.lock_ttl_ms / 1000 + 1.0
            if wait_timeout is None
            else duration_ms(wait_timeout, "wait_timeout") / 1000
        )
        if stale_ttl is None:
            self.stale_ms = 0 if stampede is None else self.ttl_ms // 2
        else:
            self.stale_ms = duration_ms(stale_ttl, "stale_ttl", allow_zero=True)
        self.negative_ms = (
            None if negative_ttl is None else duration_ms(negative_ttl, "negative_ttl")
        )
        self.backoff_ms = duration_ms(error_backoff, "error_backoff", allow_zero=True)
        self.max_value_bytes = check_int(max_value_bytes, "max_value_bytes", minimum=1)
        self.near: NearCache | None = None
        if local is not None:
            size = check_int(local, "local", minimum=1)
            max_age = (
                self.ttl_ms / 1000
                if local_ttl is None
                else duration_ms(local_ttl, "local_ttl") / 1000
            )
            self.near = NearCache(size, max_age)
        if not isinstance(invalidations, bool):
            raise ConfigurationError("invalidations must be True or False")
        # Every writer publishes (not only caches with a near cache): a near cache elsewhere
        # is only as fresh as the least talkative writer.
        publish = invalidations or local is not None
        self.channel = make_key("cache", ns, "invalidate") if publish else b""
        self.origin = secrets.token_hex(8)  # tags this cache's invalidations (see on_message)
        self._rng = rng or random.Random()
        self.stats = dict.fromkeys(
            ("hits", "misses", "loads", "load_errors", "refreshes", "early_refreshes"), 0
        )
        self.stats.update(stale_served=0, malformed=0)

    # --- keys and entries ----------------------------------------------------------------

    def entry_key(self, key: object) -> bytes:
        """``{cache:<namespace>:<key>}``; its lock is the same with ``:lock`` appended."""
        return make_key("cache", self.namespace + b":" + check_name(key, "key"))

    @staticmethod
    def lock_key(entry: bytes) -> bytes:
        return entry + b":lock"

    def soft_ms(self, ttl: Duration | None) -> int:
        """The fresh lifetime of a new entry: ``ttl`` shortened by up to ``jitter`` (random)."""
        base = self.ttl_ms if ttl is None else duration_ms(ttl, "ttl")
        return max(1, round(base * (1 - self.jitter * self._rng.random())))

    def encode(self, value: Any) -> bytes:
        """Serialize ``value``; `ConfigurationError` (naming the type) if it cannot be stored."""
        payload = self.serializer.dumps(value)
        if len(payload) > self.max_value_bytes:
            raise ConfigurationError(
                f"value of type {type(value).__name__} is {len(payload)} bytes serialized; "
                f"max_value_bytes is {self.max_value_bytes}"
            )
        return payload

    def payload_of(self, entry_key: bytes, raw: bytes) -> bytes | None:
        """The payload of a stored entry, or None (logged) if it is malformed or foreign."""
        parts = raw.split(b":", 4)
        if len(parts) != 5 or parts[0] != b"rp1":
            self.stats["malformed"] += 1
            log.warning("cache entry %r is malformed; treated as a miss", entry_key)
            return None
        tag = parts[1].decode("ascii", "replace")
        if tag != self.serializer.name:
            self.stats["malformed"] += 1
            log.warning(
                "cache entry %r was written with serializer %r, this cache uses %r; treated as "
                "a miss (never decoded)",
                entry_key,
                tag,
                self.serializer.name,
            )
            return None
        return parts[4]

    def decode(self, entry_key: bytes, payload: bytes) -> Any:
        """The value in ``payload``, or `_MISSING` (logged) if it cannot be decoded."""
        try:
            return self.serializer.loads(payload)
        except Exception as exc:  # a hostile or corrupt entry is a miss, never a crash
            self.stats["malformed"] += 1
            log.warning("cache entry %r cannot be decoded (%s); treated as a miss", entry_key, exc)
            return _MISSING

    def _read(self, entry_key: bytes, raw: bytes | None) -> Any:
        if raw is None:
            return _MISSING
        payload = self.payload_of(entry_key, raw)
        return _MISSING if payload is None else self.decode(entry_key, payload)

    # --- near cache ----------------------------------------------------------------------

    def near_get(self, entry_key: bytes) -> Any:
        """The near cache's value for ``entry_key``, or `_MISSING` (zero round trips)."""
        if self.near is None:
            return _MISSING
        payload = self.near.get(entry_key)
        return _MISSING if payload is None else self.decode(entry_key, payload)

    def _near_put(self, entry_key: bytes, raw: bytes, left_ms: int, generation: int) -> None:
        if self.near is not None:
            payload = self.payload_of(entry_key, raw)
            if payload is not None:
                self.near.put(entry_key, payload, left_ms / 1000, generation)

    def on_invalidate(self, entry_key: bytes) -> None:
        if self.near is not None:
            self.near.invalidate(entry_key)

    def on_message(self, message: bytes) -> None:
        """An invalidation ``<origin>:<entry key>``; our own writes were applied already."""
        origin, _, entry = message.partition(b":")
        if origin != self.origin.encode():
            self.on_invalidate(entry)

    def on_listener_state(self, healthy: bool) -> None:
        if self.near is not None:
            self.near.set_healthy(healthy)

    # --- plans ---------------------------------------------------------------------------

    def _get_eval(self, entry: bytes, mode: int, token: str) -> Eval:
        r = 1.0 - self._rng.random()  # in (0, 1]: log(r) is finite
        return package_script("cache_get").eval(
            (entry, self.lock_key(entry)), (mode, token, self.lock_ttl_ms, self.beta, r)
        )

    def get(self, key: object, default: Any) -> Plan[Any]:
        entry = self.entry_key(key)
        value = self.near_get(entry)
        if value is not _MISSING:
            return value
        generation = self.near.generation if self.near is not None else 0
        status, raw, _, left = yield self._get_eval(entry, 0, "")
        if status != _FRESH:
            return default
        value = self._read(entry, raw)
        if value is _MISSING:
            return default
        self.stats["hits"] += 1
        self._near_put(entry, raw, int(left), generation)
        return value

    def set(self, key: object, value: Any, ttl: Duration | None) -> Plan[None]:
        entry = self.entry_key(key)
        soft = self.soft_ms(ttl)
        payload = self.encode(value)
        self.on_invalidate(entry)
        try:
            yield self._set_eval(entry, payload, soft, 0, "")
        finally:
            self.on_invalidate(entry)  # the reply arrived: no read begun before now may store

    def _set_eval(
        self, entry: bytes, payload: bytes, soft: int, delta: int, token: str, stale: bool = True
    ) -> Eval:
        return package_script("cache_set").eval(
            (entry, self.lock_key(entry)),
            (
                self.serializer.name,
                payload,
                soft,
                self.stale_ms if stale else 0,
                delta,
                token,
                self.lock_ttl_ms,
                self.channel,
                self.origin,
            ),
        )

    def delete(self, key: object) -> Plan[bool]:
        entry = self.entry_key(key)
        self.on_invalidate(entry)
        try:
            deleted = yield package_script("cache_delete").eval(
                (entry, self.lock_key(entry)), (self.lock_ttl_ms, self.channel, self.origin)
            )
        finally:
            self.on_invalidate(entry)
        return bool(deleted)

    def check_load(
        self, key: object, loader: object, ttl: Duration | None, asynchronous: bool
    ) -> bytes:
        """Validate `get_or_load`'s arguments before any I/O; returns the entry key."""
        entry = self.entry_key(key)
        check_callable(loader, "loader", asynchronous=asynchronous)
        if ttl is not None:
            duration_ms(ttl, "ttl")
        return entry

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def get_or_load(
        self, entry: bytes, loader: Callable[[], Any], ttl: Duration | None, token: str
    ) -> Plan[tuple[Any, bool]]:
        """Read; on a miss load (one loader across processes), or wait and read its result.

        Returns ``(value, refresh)``: ``refresh`` means this caller took the recompute lock
        for a stale or early-expiring entry it is returning at once, and must run `refresh`
        in the background.
        """
        value = self.near_get(entry)
        if value is not _MISSING:
            return value, False
        generation = self.near.generation if self.near is not None else 0
        deadline: float | None = None
        pause = 0.01
        while True:
            status, raw, took, left = yield self._get_eval(entry, self.mode, token)
            if status in (_FRESH, _EARLY, _STALE):
                value = self._read(entry, raw)
                if value is not _MISSING:
                    self.stats["hits"] += 1
                    if status == _FRESH:
                        self._near_put(entry, raw, int(left), generation)
                    elif status == _STALE:
                        self.stats["stale_served"] += 1
                    elif status == _EARLY:
                        self.stats["early_refreshes"] += 1
                    return value, bool(took)
                # A foreign or corrupt entry: replace it (no lock was taken: it looked like a hit).
                self.stats["misses"] += 1
                return (yield from self._load(entry, loader, ttl, token)), False
            if took:
                self.stats["misses"] += 1
                return (yield from self._load(entry, loader, ttl, token)), False
            # Another process is loading this key: wait briefly, then read its result.
            now = yield Now()
            if deadline is None:
                deadline = now + self.wait_timeout
            elif now >= deadline:
                raise LockTimeoutError(
                    f"cache key {entry!r}: another process held the recompute lock for "
                    f"{self.wait_timeout:.3g}s and stored nothing"
                )
            yield Sleep(min(pause, max(0.0, deadline - now)))
            pause = min(pause * 1.5, 0.1)

    def _load(
        self, entry: bytes, loader: Callable[[], Any], ttl: Duration | None, token: str
    ) -> Plan[Any]:
        soft = self.soft_ms(ttl)
        started = yield Now()
        self.stats["loads"] += 1
        negative = False
        try:
            value = yield Call(loader)
            if value is None and self.negative_ms is not None:
                soft, negative = self.negative_ms, True  # and no stale window: absence is cheap
        except Exception:
            self.stats["load_errors"] += 1
            yield from self._unlock(entry, token, self.backoff_ms)
            raise
        except BaseException:  # cancelled or interrupted: not the store's fault, let go now
            yield from self._unlock(entry, token, 0)
            raise
        try:
            payload = None if value is None and self.negative_ms is None else self.encode(value)
        except ConfigurationError:  # a bug in the caller, not a failing store: no backoff
            yield from self._unlock(entry, token, 0)
            raise
        if payload is None:  # None is not cached unless negative_ttl is set
            yield from self._unlock(entry, token, 0)
            return value
        finished = yield Now()
        delta = max(0, round((finished - started) * 1000))
        yield self._set_eval(entry, payload, soft, delta, token, stale=not negative)
        return value

    def _unlock(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        yield package_script("cache_unlock").eval((self.lock_key(entry),), (token, backoff_ms))

    def refresh(
        self, entry: bytes, loader: Callable[[], Any], ttl: Duration | None, token: str
    ) -> Plan[None]:
        """Reload a stale or early-expiring entry in the background; on failure keep the old."""
        self.stats["refreshes"] += 1
        try:
            yield from self._load(entry, loader, ttl, token)
        except Exception as exc:
            message = "refreshing cache key %r failed (%r); the stale value stays in place"
            coalesced(log, ("refresh", type(exc)), message, entry, exc)

    def warm(
        self,
        items: Mapping[Any, Any] | Iterable[Any],
        loader: Callable[..., Any] | None,
        ttl: Duration | None,
        batch_size: int,
        progress: Callable[[int, int], Any] | None,
    ) -> Plan[WarmResult]:
        if ttl is not None:
            duration_ms(ttl, "ttl")
        check_int(batch_size, "batch_size", minimum=1)
        if progress is not None and not callable(progress):
            raise ConfigurationError(f"progress must be callable, not {type(progress).__name__}")
        if loader is None:
            pairs = list(items.items() if isinstance(items, Mapping) else items)
            for pair in pairs:
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise ConfigurationError(
                        "warm() needs a mapping or (key, value) pairs, or keys with loader="
                    )
                self.entry_key(pair[0])
            keys = [k for k, _ in pairs]
        else:
            keys = list(items)
            for k in keys:
                self.entry_key(k)
            pairs = []
        total = len(keys)
        stored = skipped = done = 0
        token = "warm:" + self.new_token()  # stores only where no loader holds the lock
        for start in range(0, total, batch_size):
            batch_keys = keys[start : start + batch_size]
            if loader is None:
                batch = pairs[start : start + batch_size]
            else:
                loaded = yield Call(loader, (batch_keys,))
                if not isinstance(loaded, Mapping):
                    raise ConfigurationError(
                        f"warm loader must return a mapping of key to value, not "
                        f"{type(loaded).__name__}"
                    )
                batch = [(k, loaded[k]) for k in batch_keys if k in loaded]
            effects = []
            for k, v in batch:
                entry = self.entry_key(k)
                effects.append(self._set_eval(entry, self.encode(v), self.soft_ms(ttl), 0, token))
            replies = (yield Pipeline(tuple(effects))) if effects else []
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
                if reply == 1:
                    stored += 1
                else:
                    skipped += 1
            done += len(batch_keys)
            if progress is not None:
                yield Call(progress, (done, total))
        return WarmResult(stored, skipped)


class WriteThroughCore:
    """Plans of `WriteThrough`: the database first, then the cache, consistent if either fails.

    Keys whose cache entry could not be invalidated after a database write are remembered in
    ``dirty`` and invalidated before any later operation; until that works they are read from
    the database directly, never from the (possibly stale) cache.
    """

    def __init__(
        self,
        cache: CacheCore,
        store: Callable[..., Any],
        remove: Callable[..., Any] | None,
        asynchronous: bool,
    ) -> None:
        check_callable(store, "store", asynchronous=asynchronous)
        if remove is not None:
            check_callable(remove, "remove", asynchronous=asynchronous)
        self.cache = cache
        self.store = store
        self.remove = remove
        self.dirty: dict[bytes, Any] = {}

    def flush_dirty(self) -> Plan[None]:
        for entry, key in list(self.dirty.items()):
            try:
                yield from self.cache.delete(key)
            except BackendError:
                continue
            self.dirty.pop(entry, None)

    def write(self, key: Any, value: Any, ttl: Duration | None) -> Plan[None]:
        entry = self.cache.entry_key(key)
        self.cache.encode(value)  # an unstorable value fails here, before the database write
        if ttl is not None:
            duration_ms(ttl, "ttl")
        yield from self.flush_dirty()
        yield Call(self.store, (key, value))  # raises: the cache was not touched
        try:
            yield from self.cache.set(key, value, ttl)
        except BackendError as exc:
            yield from self._invalidate(entry, key, exc)

    def delete(self, key: Any) -> Plan[None]:
        entry = self.cache.entry_key(key)
        if self.remove is None:
            raise ConfigurationError("WriteThrough.delete needs remove= (the database delete)")
        yield from self.flush_dirty()
        yield Call(self.remove, (key,))
        try:
            yield from self.cache.delete(key)
        except BackendError as exc:
            yield from self._invalidate(entry, key, exc)

    def _invalidate(self, entry: bytes, key: Any, cause: BackendError) -> Plan[None]:
        message = "cache write for %r failed after the database write (%s); invalidating"
        coalesced(log, ("write-through", type(cause)), message, entry, cause)
        try:
            yield from self.cache.delete(key)
        except BackendError as exc:
            self.dirty[entry] = key
            raise BackendError(
                f"the database was written but the cache entry {entry!r} could neither be "
                "updated nor deleted; this WriteThrough will not serve it from the cache and "
                "retries the invalidation before its next operation (other processes may serve "
                "the old value until the entry's ttl)"
            ) from exc


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One write handed to a write-behind ``flush``: the latest value of ``key`` in the batch.

    ``version`` increases with every write (it is the stream entry id as an int: ms * 10**6 +
    sequence): a database that keeps it can refuse an older write that arrives late, e.g.
    ``UPDATE ... WHERE version < :version``, since a reclaimed batch may be flushed after a
    newer one. ``deliveries`` counts how often this entry was handed out (1 the first time);
    ``superseded`` how many earlier writes of the key in this batch it replaced. ``key`` is a
    str (a bytes key is decoded as UTF-8, undecodable bytes kept as surrogate escapes).
    """

    key: str
    value: Any
    version: int
    id: str
    deliveries: int
    superseded: int = 0


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one flush cycle did: stream entries read, writes flushed after coalescing, entries
    moved to the dead letters, and whether the flush callback failed."""

    read: int
    flushed: int
    dead: int
    failed: bool = False


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _version(entry_id: str) -> int:
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


class WriteBehindCore:
    """Plans of `WriteBehind`: a cache write plus a stream entry; a flusher that coalesces."""

    def __init__(
        self,
        cache: CacheCore,
        flush: Callable[..., Any],
        *,
        batch_size: int,
        interval: Duration,
        claim_idle: Duration,
        max_attempts: int,
        group: str,
        asynchronous: bool,
    ) -> None:
        check_callable(flush, "flush", asynchronous=asynchronous)
        self.cache = cache
        self.flush = flush
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.interval = duration_ms(interval, "interval", allow_zero=True) / 1000
        self.claim_idle_ms = duration_ms(claim_idle, "claim_idle")
        self.max_attempts = check_int(max_attempts, "max_attempts", minimum=1)
        self.group = check_name(group, "group")
        self.stream = make_key("cache", cache.namespace, "writes")
        self.dead_stream = make_key("cache", cache.namespace, "writes-dead")
        self.stopping = False
        self.stats = {
            "written": 0,
            "read": 0,
            "flushed": 0,
            "dead": 0,
            "failures": 0,
            "backend_errors": 0,
        }

    def write(self, key: Any, value: Any, ttl: Duration | None, cluster: bool) -> Plan[str]:
        entry = self.cache.entry_key(key)
        raw_key = check_name(key, "key")
        payload = self.cache.encode(value)
        soft = self.cache.soft_ms(ttl)
        cache = self.cache
        self.cache.on_invalidate(entry)
        try:
            if not cluster:
                reply = yield package_script("cache_wb_write").eval(
                    (entry, cache.lock_key(entry), self.stream),
                    (
                        cache.serializer.name,
                        payload,
                        soft,
                        cache.stale_ms,
                        cache.lock_ttl_ms,
                        cache.channel,
                        cache.origin,
                        raw_key,
                    ),
                )
            else:
                # The entry and the stream live in different slots: record the write durably
                # first, then update the cache (a crash in between loses no write).
                reply = yield Command(
                    (
                        "XADD",
                        self.stream,
                        "*",
                        "k",
                        raw_key,
                        "f",
                        cache.serializer.name,
                        "p",
                        payload,
                    )
                )
                yield cache._set_eval(entry, payload, soft, 0, "")
        finally:
            self.cache.on_invalidate(entry)
        self.stats["written"] += 1
        return _text(reply)

    def flush_once(self, consumer: str) -> Plan[FlushResult]:
        """Read a batch (reclaimed entries first), coalesce per key, flush, acknowledge."""
        check_name(consumer, "consumer")
        entries = yield package_script("cache_wb_read").eval(
            (self.stream,), (self.group, consumer, self.batch_size, self.claim_idle_ms)
        )
        if not entries:
            return FlushResult(0, 0, 0)
        latest: dict[str, PendingWrite] = {}
        counts: dict[str, int] = {}
        ids: list[str] = []
        dead: list[str] = []
        for entry_id, deliveries, fields in entries:
            entry_id = _text(entry_id)
            data = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
            key = _text(data.get("k", b""))
            payload = data.get("p")
            if int(deliveries) > self.max_attempts or payload is None:
                dead.append(entry_id)
                continue
            if _text(data.get("f", b"")) != self.cache.serializer.name:
                dead.append(entry_id)
                continue
            try:
                value = self.cache.decode(self.cache.entry_key(key), payload)
            except ConfigurationError:  # a key no writer of ours could have produced
                value = _MISSING
            if value is _MISSING:
                dead.append(entry_id)
                continue
            ids.append(entry_id)
            counts[key] = counts.get(key, 0) + 1
            # Stream order is write order: the last entry of a key in the batch wins.
            latest[key] = PendingWrite(
                key, value, _version(entry_id), entry_id, int(deliveries), counts[key] - 1
            )
        if dead:
            yield package_script("cache_wb_ack").eval(
                (self.stream, self.dead_stream),
                (self.group, f"undeliverable after {self.max_attempts} attempts", *dead),
            )
            self.stats["dead"] += len(dead)
            log.error("write-behind: %d entries moved to %r", len(dead), self.dead_stream)
        self.stats["read"] += len(entries)
        if not latest:
            return FlushResult(len(entries), 0, len(dead))
        batch = sorted(latest.values(), key=lambda w: w.version)
        try:
            yield Call(self.flush, (batch,))
        except Exception as exc:
            # Not acknowledged: the entries stay pending and are reclaimed after claim_idle
            # (their delivery count rises; past max_attempts they go to the dead letters).
            self.stats["failures"] += 1
            message = "write-behind flush of %d writes failed: %r"
            coalesced(log, ("flush", self.stream, type(exc)), message, len(batch), exc)
            return FlushResult(len(entries), 0, len(dead), failed=True)
        yield package_script("cache_wb_ack").eval(
            (self.stream, self.dead_stream), (self.group, "", *ids)
        )
        self.stats["flushed"] += len(batch)
        return FlushResult(len(entries), len(batch), len(dead))

    def run(self, consumer: str, max_cycles: int | None) -> Plan[None]:
        """Flush until `stopping` (or ``max_cycles``), pausing ``interval`` after a short batch.

        A server that is away (restarting, loading its data, not answering) is ridden out with
        backoff; a failed cycle counts towards ``max_cycles``. Entries read but not yet
        acknowledged when it went away stay pending and are reclaimed after ``claim_idle``.
        """
        check_name(consumer, "consumer")
        cycles = 0
        failures = 0  # in a row
        while not self.stopping and (max_cycles is None or cycles < max_cycles):
            cycles += 1
            try:
                result = yield from self.flush_once(consumer)
            except TRANSIENT as exc:
                self.stats["backend_errors"] += 1
                message = "write-behind flusher %r: %s; retrying"
                coalesced(log, ("flusher", self.stream, error_kind(exc)), message, consumer, exc)
                yield from reconnect_backoff(failures)
                failures += 1
                continue
            failures = 0
            if result.read < self.batch_size or result.failed:
                yield Sleep(self.interval)

    def pending(self) -> Plan[int]:
        """Writes not yet flushed (stream entries not yet acknowledged and deleted)."""
        length = yield Command(("XLEN", self.stream))
        return int(length)
