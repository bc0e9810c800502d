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
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .. import _metrics
from .._errors import BackendError, CacheValueError, ConfigurationError, LockTimeoutError
from .._keys import check_name, make_key
from .._logging import coalesced, error_kind
from .._plan import Call, Command, Eval, Now, Pipeline, Plan, Sleep
from .._script import package_script
from .._serializers import Serializer, get_serializer
from .._validate import Duration, check_int, duration_ms
from .pubsub import Message
from .reconnect import TRANSIENT, reconnect_backoff
from .replication import replicated

__all__ = [
    "BUCKETS",
    "FOREVER",
    "CacheCore",
    "Forever",
    "KeyBuilder",
    "Ttl",
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
_SLOW: Any = object()  # a fast read found an entry only the read script can judge


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


class Forever:
    """The type of `FOREVER`: a ttl meaning "never expires" (no soft expiry, no ``PX``)."""

    _instance: Forever | None = None

    def __new__(cls) -> Forever:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FOREVER"

    def __reduce__(self) -> str:
        return "FOREVER"


FOREVER = Forever()
"""Pass as ``ttl=`` to store an entry that never expires (it stays until deleted or cleared)."""

Ttl = Duration | Forever

BUCKETS = 1024  # hash tags of a namespace on a cluster: each has its own generation counter
MAX_BATCH = 500  # keys per script call of the bulk operations: bounds the time a script runs
MAX_EXACT = 2**53 - 1  # incr/decr work on integers a Lua number (a double) holds exactly

_NOT_INTEGER, _OVERFLOW = -1, -2


# `CacheCore.stats` entries that are also metrics
_COUNTED = {
    "hits": _metrics.CACHE_HITS,
    "misses": _metrics.CACHE_MISSES,
    "stale_served": _metrics.CACHE_STALE,
    "loads": _metrics.CACHE_LOADS,
    "load_errors": _metrics.CACHE_LOAD_ERRORS,
}


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
        fail_open: bool = False,
        cluster: bool = False,
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
        if not _TAG.match(self.serializer.name) or self.serializer.name == "int":
            raise ConfigurationError(
                f"serializer name {self.serializer.name!r} must match {_TAG.pattern} and not be "
                "'int' (it is stored in each entry to detect values written by another serializer)"
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
        if not isinstance(fail_open, bool):
            raise ConfigurationError("fail_open must be True or False")
        self.fail_open = fail_open
        self.cluster = cluster
        # Every writer publishes (not only caches with a near cache): a near cache elsewhere
        # is only as fresh as the least talkative writer.
        publish = invalidations or local is not None
        self.channel = make_key("cache", ns, "invalidate") if publish else b""
        self.origin = secrets.token_hex(8)  # tags this cache's invalidations (see on_message)
        self._rng = rng or random.Random()
        self.stats = dict.fromkeys(
            ("hits", "misses", "loads", "load_errors", "refreshes", "early_refreshes"), 0
        )
        self.stats.update(stale_served=0, malformed=0, backend_errors=0)
        self._labels = (ns.decode(),)

    def _count(self, what: str, n: int = 1) -> None:
        """Add to one of `stats` and, with metrics on, to its metric (one recording point)."""
        self.stats[what] += n
        if _metrics.on:
            metric = _COUNTED.get(what)
            if metric is not None:
                metric.record(self._labels, n)

    def _missed(self, n: int = 1) -> None:
        """A plain read (get, get_many) found nothing: a miss for the metric only (``stats``
        counts as misses the reads that loaded)."""
        if _metrics.on:
            _metrics.CACHE_MISSES.record(self._labels, n)

    # --- keys and entries ----------------------------------------------------------------

    def entry_key(self, key: object) -> bytes:
        """The Redis key of ``key``'s entry.

        Standalone: ``{cache:<namespace>:<key>}`` (lock: ``...:lock``; the namespace's
        generation: ``{cache:<namespace>}:gen``). On a cluster the hash tag is one of `BUCKETS`
        buckets of the namespace, so that the bucket's generation counter shares the entry's
        slot and every script reads it atomically: ``{cache:<namespace>:<bucket>}:v:<key>``
        (lock ``...:l:<key>``, generation ``{cache:<namespace>:<bucket>}:gen``).
        """
        raw = check_name(key, "key")
        if not self.cluster:
            return make_key("cache", self.namespace + b":" + raw)
        bucket = zlib.crc32(raw) % BUCKETS
        return make_key("cache", self.namespace + b":" + str(bucket).encode()) + b":v:" + raw

    def lock_key(self, entry: bytes) -> bytes:
        if not self.cluster:
            return entry + b":lock"
        tag = entry.index(b"}") + 1  # the namespace and the bucket hold no brace
        return entry[:tag] + b":l:" + entry[tag + 3 :]

    def gen_key(self, entry: bytes) -> bytes:
        """The generation counter that `clear` increments, for ``entry``."""
        if not self.cluster:
            return make_key("cache", self.namespace, "gen")
        return entry[: entry.index(b"}") + 1] + b":gen"

    def _group(self, entry: bytes) -> bytes:
        return entry[: entry.index(b"}") + 1] if self.cluster else b""

    def check_ttl(self, ttl: Ttl | None) -> None:
        if ttl is not None and not isinstance(ttl, Forever):
            duration_ms(ttl, "ttl")

    def soft_ms(self, ttl: Ttl | None, *, forever: bool = False) -> int:
        """The fresh lifetime of a new entry: ``ttl`` shortened by up to ``jitter`` (random);
        -1 for `FOREVER` (accepted only where the scripts support it: ``forever=True``)."""
        if isinstance(ttl, Forever):
            if not forever:
                raise ConfigurationError("ttl=FOREVER is not supported here")
            return -1
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

    def encode_entry(self, value: Any) -> tuple[str, bytes]:
        """``(format tag, payload)``: an `int` is stored as decimal text under the tag ``int``
        whatever the serializer (JSON's own text for it is already decimal), so `incr` can
        change it in a script; everything else goes through the serializer."""
        if type(value) is int and self.serializer.name != "json":
            return "int", str(value).encode()
        return self.serializer.name, self.encode(value)

    def payload_of(self, entry_key: bytes, raw: bytes) -> tuple[str, bytes] | None:
        """``(format tag, payload)`` of a stored entry, or None (logged) if malformed or foreign."""
        parts = raw.split(b":", 5)
        if len(parts) != 6 or parts[0] != b"rp2":
            self._count("malformed")
            # Coalesced: after an upgrade every older entry (rp1) is malformed once.
            message = "cache entry %r is malformed; treated as a miss"
            coalesced(log, ("malformed", self.namespace), message, entry_key)
            return None
        tag = parts[1].decode("ascii", "replace")
        if tag != self.serializer.name and tag != "int":
            self._count("malformed")
            message = (
                "cache entry %r was written with serializer %r, this cache uses %r; treated as "
                "a miss (never decoded)"
            )
            kind = ("foreign", self.namespace, tag)
            coalesced(log, kind, message, entry_key, tag, self.serializer.name)
            return None
        return tag, parts[5]

    def decode(self, entry_key: bytes, payload: bytes, tag: str | None = None) -> Any:
        """The value in ``payload``, or `_MISSING` (logged) if it cannot be decoded."""
        try:
            if tag == "int":
                return int(payload)
            return self.serializer.loads(payload)
        except Exception as exc:  # a hostile or corrupt entry is a miss, never a crash
            self._count("malformed")
            message = "cache entry %r cannot be decoded (%s); treated as a miss"
            coalesced(log, ("undecodable", self.namespace, type(exc)), message, entry_key, exc)
            return _MISSING

    def _read(self, entry_key: bytes, raw: bytes | None) -> Any:
        if raw is None:
            return _MISSING
        parsed = self.payload_of(entry_key, raw)
        return _MISSING if parsed is None else self.decode(entry_key, parsed[1], parsed[0])

    # --- near cache ----------------------------------------------------------------------

    def near_get(self, entry_key: bytes) -> Any:
        """The near cache's value for ``entry_key``, or `_MISSING` (zero round trips)."""
        if self.near is None:
            return _MISSING
        raw = self.near.get(entry_key)
        if raw is None:
            return _MISSING
        if _metrics.on:
            _metrics.CACHE_NEAR_HITS.record(self._labels)
        return self._read(entry_key, raw)

    def _near_put(self, entry_key: bytes, raw: bytes, left_ms: int, generation: int) -> None:
        if self.near is not None:
            ttl = self.near.max_age if left_ms < 0 else left_ms / 1000  # -1: no expiry
            self.near.put(entry_key, raw, ttl, generation)

    def on_invalidate(self, entry_key: bytes) -> None:
        if self.near is not None:
            self.near.invalidate(entry_key)

    def on_invalidate_all(self) -> None:
        if self.near is not None:
            self.near.clear()

    def on_message(self, message: Message) -> None:
        """An invalidation ``<origin>:<entry key>`` (``<origin>:*``: everything, a `clear`);
        our own writes were applied already."""
        origin, _, entry = message.data.partition(b":")
        if origin == self.origin.encode():
            return
        if entry == b"*":
            self.on_invalidate_all()
        else:
            self.on_invalidate(entry)

    def on_subscription_state(self, healthy: bool) -> None:
        if self.near is not None:
            self.near.set_healthy(healthy)

    # --- fail open -----------------------------------------------------------------------

    def failed_open(self, what: str, exc: BackendError) -> None:
        """Count and log (coalesced: one line per interval) a backend error served open."""
        self._count("backend_errors")
        coalesced(
            log,
            ("fail_open", self.namespace),
            "cache %r: %s failed (%s: %s); answered without the cache (fail_open=True)",
            self.namespace.decode(errors="replace"),
            what,
            type(exc).__name__,
            exc,
        )

    # --- plans ---------------------------------------------------------------------------

    def _get_eval(self, entry: bytes, mode: int, token: str) -> Eval:
        r = 1.0 - self._rng.random()  # in (0, 1]: log(r) is finite
        return package_script("cache_get").eval(
            (entry, self.lock_key(entry), self.gen_key(entry)),
            (mode, token, self.lock_ttl_ms, self.beta, r),
        )

    @property
    def fast_reads(self) -> bool:
        """Whether plain reads may use ``MGET`` instead of the read script.

        Without a stale window an entry expires (``PX``) exactly at its soft expiry, and its
        header says so (``=<ms>``): an entry that exists is fresh, so reading it and its
        generation counter (same slot, even on a cluster) is all a read needs, with no server
        clock and no script. An entry written by a cache with a stale window still needs the
        script; such a read falls back to it (two round trips). Not with a near cache, which
        needs the remaining lifetime the script reports.
        """
        return self.stale_ms == 0 and self.near is None

    def _fast(self, entry: bytes, raw: bytes | None, generation: bytes | None) -> Any:
        """The value of a fast read, `_MISSING` for a miss, or `_SLOW` (ask the script)."""
        if raw is None:
            return _MISSING
        parts = raw.split(b":", 5)
        if len(parts) == 6 and parts[0] == b"rp2" and parts[4] != (generation or b"0"):
            return _MISSING  # written before a clear (the script would delete it; no matter)
        if len(parts) == 6 and not (parts[2] == b"0" or parts[2][:1] == b"="):
            return _SLOW
        value = self._read(entry, raw)
        if value is not _MISSING:
            self._count("hits")
        return value

    def get(self, key: object, default: Any) -> Plan[Any]:
        entry = self.entry_key(key)
        value = self.near_get(entry)
        if value is not _MISSING:
            return value
        generation = self.near.generation if self.near is not None else 0
        try:
            if self.fast_reads:
                raw, written = yield Command(("MGET", entry, self.gen_key(entry)))
                value = self._fast(entry, raw, written)
                if value is not _SLOW:
                    if value is _MISSING:
                        self._missed()
                        return default
                    return value
            status, raw, _, left, _ = yield self._get_eval(entry, 0, "")
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("get", exc)
            return default
        value = self._read(entry, raw) if status == _FRESH else _MISSING
        if value is _MISSING:
            self._missed()
            return default
        self._count("hits")
        self._near_put(entry, raw, int(left), generation)
        return value

    def exists(self, key: object) -> Plan[bool]:
        entry = self.entry_key(key)
        if self.near is not None and self.near.get(entry) is not None:
            return True
        try:
            status, _, _, _, _ = yield self._get_eval(entry, 4, "")
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("exists", exc)
            return False
        return bool(status == _FRESH)

    def _write(self, entries: list[bytes], effect: Eval) -> Plan[Any]:
        """Send a write, dropping this process's near copies before it and after its reply."""
        for entry in entries:
            self.on_invalidate(entry)
        try:
            return (yield effect)
        finally:
            for entry in entries:  # the reply arrived: no read begun before now may store
                self.on_invalidate(entry)

    def set(
        self, key: object, value: Any, ttl: Ttl | None, *, only_absent: bool = False
    ) -> Plan[bool]:
        entry = self.entry_key(key)
        soft = self.soft_ms(ttl, forever=True)
        tag, payload = self.encode_entry(value)
        stored = yield from self._write(
            [entry], self._set_eval(entry, payload, soft, 0, "", tag=tag, only_absent=only_absent)
        )
        return bool(stored)

    def _set_eval(
        self,
        entry: bytes,
        payload: bytes,
        soft: int,
        delta: int,
        token: str,
        stale: bool = True,
        *,
        tag: str | None = None,
        generation: str = "",
        only_absent: bool = False,
    ) -> Eval:
        return package_script("cache_set").eval(
            (entry, self.lock_key(entry), self.gen_key(entry)),
            (
                self.serializer.name if tag is None else tag,
                payload,
                soft,
                self.stale_ms if stale else 0,
                delta,
                token,
                self.lock_ttl_ms,
                self.channel,
                self.origin,
                generation,
                1 if only_absent else 0,
            ),
        )

    def delete(self, key: object) -> Plan[bool]:
        entry = self.entry_key(key)
        deleted = yield from self._write(
            [entry],
            package_script("cache_delete").eval(
                (entry, self.lock_key(entry), self.gen_key(entry)),
                (self.lock_ttl_ms, self.channel, self.origin),
            ),
        )
        return bool(deleted)

    def touch(self, key: object, ttl: Ttl | None) -> Plan[bool]:
        entry = self.entry_key(key)
        soft = self.soft_ms(ttl, forever=True)
        touched = yield from self._write(
            [entry],
            package_script("cache_touch").eval(
                (entry, self.gen_key(entry)), (soft, self.stale_ms, self.channel, self.origin)
            ),
        )
        return bool(touched)

    def incr(self, key: object, delta: int, ttl: Ttl | None, create: bool) -> Plan[int | None]:
        """Add ``delta`` to an integer entry in one script; None if missing and not ``create``."""
        entry = self.entry_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ConfigurationError(f"delta must be an int, not {type(delta).__name__}")
        if abs(delta) > MAX_EXACT:
            raise ConfigurationError(f"delta must be within ±(2**53 - 1), got {delta}")
        soft = self.soft_ms(ttl, forever=True)
        code, value = yield from self._write(
            [entry],
            package_script("cache_incr").eval(
                (entry, self.lock_key(entry), self.gen_key(entry)),
                (
                    self.serializer.name,
                    delta,
                    1 if create else 0,
                    soft,
                    self.stale_ms,
                    self.lock_ttl_ms,
                    self.channel,
                    self.origin,
                ),
            ),
        )
        if code == _NOT_INTEGER:
            raise CacheValueError(
                f"cache key {entry!r} does not hold an integer: incr/decr need a value stored "
                "as an int (by set, add, set_many or incr)"
            )
        if code == _OVERFLOW:
            raise CacheValueError(
                f"incr/decr of cache key {entry!r} by {delta} would leave ±(2**53 - 1), the "
                "integers the server-side script computes exactly"
            )
        if code == 0:
            return None
        return int(value)

    def clear(self) -> Plan[None]:
        """Make every entry of the namespace a miss: O(1) round trips, whatever the key count.

        Standalone: one script increments the namespace's generation (and tells near caches).
        Cluster: one pipeline increments the `BUCKETS` generation counters (one round trip per
        node), then one PUBLISH tells near caches, only once every counter moved.
        """
        self.on_invalidate_all()
        try:
            if not self.cluster:
                yield package_script("cache_clear").eval(
                    (self.gen_key(b""),), (self.channel, self.origin)
                )
                return
            prefix = b"{cache:" + self.namespace + b":"
            effects = tuple(
                Command(("INCR", prefix + str(b).encode() + b"}:gen")) for b in range(BUCKETS)
            )
            _raise_first((yield Pipeline(effects)))
            if self.channel:
                yield Command(("PUBLISH", self.channel, self.origin.encode() + b":*"))
        finally:
            self.on_invalidate_all()

    # --- bulk operations -----------------------------------------------------------------

    def _batches(self, entries: list[bytes]) -> list[list[bytes]]:
        """Split ``entries`` into groups one script can take: same slot, at most `MAX_BATCH`."""
        groups: dict[bytes, list[bytes]] = {}
        for entry in entries:
            groups.setdefault(self._group(entry), []).append(entry)
        return [
            group[i : i + MAX_BATCH]
            for group in groups.values()
            for i in range(0, len(group), MAX_BATCH)
        ]

    def _many_keys(self, batch: list[bytes]) -> tuple[bytes, ...]:
        keys = [self.gen_key(batch[0])]
        for entry in batch:
            keys += (entry, self.lock_key(entry))
        return tuple(keys)

    def _entries(self, keys: Iterable[Any]) -> tuple[list[Any], list[bytes]]:
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise ConfigurationError(
                f"keys must be an iterable of keys (str or bytes), not {type(keys).__name__}"
            )
        listed = list(keys)
        return listed, [self.entry_key(k) for k in listed]

    def _read_many(
        self, entries: list[bytes], mode: int, token: str
    ) -> Plan[dict[bytes, tuple[int, Any, int, int, str]]]:
        """``{entry: (status, raw, took, left, generation)}`` for distinct ``entries``."""
        batches = self._batches(entries)
        effects = []
        for batch in batches:
            rs = [1.0 - self._rng.random() for _ in batch]
            effects.append(
                package_script("cache_get_many").eval(
                    self._many_keys(batch), (mode, token, self.lock_ttl_ms, self.beta, *rs)
                )
            )
        replies = yield from _batch(effects)
        out: dict[bytes, tuple[int, Any, int, int, str]] = {}
        for batch, reply in zip(batches, replies, strict=True):
            generation = _text(reply[0])
            for i, entry in enumerate(batch):
                status, raw, took, left = reply[1 + 4 * i : 5 + 4 * i]
                out[entry] = (int(status), raw, int(took), int(left), generation)
        return out

    def get_many(self, keys: Iterable[Any], default: Any) -> Plan[list[Any]]:
        _, entries = self._entries(keys)
        values: dict[bytes, Any] = {}
        for entry in entries:
            value = self.near_get(entry)
            if value is not _MISSING:
                values[entry] = value
        wanted = list(dict.fromkeys(e for e in entries if e not in values))
        if wanted and self.fast_reads:
            try:
                wanted = yield from self._fast_many(wanted, values)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_many", exc)
                wanted = []
        if wanted:
            generation = self.near.generation if self.near is not None else 0
            try:
                read = yield from self._read_many(wanted, 0, "")
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_many", exc)
                read = {}
            for entry, (status, raw, _, left, _) in read.items():
                if status != _FRESH:
                    continue
                value = self._read(entry, raw)
                if value is not _MISSING:
                    self._count("hits")
                    values[entry] = value
                    self._near_put(entry, raw, left, generation)
        if _metrics.on:
            self._missed(sum(1 for entry in set(entries) if entry not in values))
        return [values.get(entry, default) for entry in entries]

    def _fast_many(self, wanted: list[bytes], values: dict[bytes, Any]) -> Plan[list[bytes]]:
        """`fast_reads` for many keys: one ``MGET`` (generation first) per slot and batch.
        Fills ``values`` with the hits; returns the entries only the script can judge."""
        batches = self._batches(wanted)
        replies = yield from _batch([Command(("MGET", self.gen_key(b[0]), *b)) for b in batches])
        slow = []
        for batch, reply in zip(batches, replies, strict=True):
            for entry, raw in zip(batch, reply[1:], strict=True):
                value = self._fast(entry, raw, reply[0])
                if value is _SLOW:
                    slow.append(entry)
                elif value is not _MISSING:
                    values[entry] = value
        return slow

    def set_many(self, items: Mapping[Any, Any] | Iterable[Any], ttl: Ttl | None) -> Plan[None]:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded: dict[bytes, tuple[str, bytes, int]] = {}
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ConfigurationError("set_many() needs a mapping or (key, value) pairs")
            entry = self.entry_key(pair[0])
            tag, payload = self.encode_entry(pair[1])  # all checked before anything is sent
            encoded[entry] = (tag, payload, self.soft_ms(ttl, forever=True))
        if encoded:
            yield from self._store_many(encoded, "")

    def _store_many(
        self,
        encoded: dict[bytes, tuple[str, bytes, int]],
        token: str,
        generations: Mapping[bytes, str] | None = None,
        delta: int = 0,
    ) -> Plan[dict[bytes, bool]]:
        """Store entries, one script per slot and batch; with a loader's ``token``, each batch
        only if the generation its first entry was read under (``generations``) still holds:
        one counter per batch, since a batch lives in one slot."""
        batches = self._batches(list(encoded))
        effects = []
        for batch in batches:
            generation = "" if generations is None else generations[batch[0]]
            args: list[Any] = [
                self.stale_ms,
                self.lock_ttl_ms,
                self.channel,
                self.origin,
                token,
                generation,
            ]
            for entry in batch:
                tag, payload, soft = encoded[entry]
                args += (tag, payload, soft, delta)
            effects.append(
                package_script("cache_set_many").eval(self._many_keys(batch), tuple(args))
            )
        for entry in encoded:
            self.on_invalidate(entry)
        try:
            replies = yield from _batch(effects)
        finally:
            for entry in encoded:
                self.on_invalidate(entry)
        stored: dict[bytes, bool] = {}
        for batch, reply in zip(batches, replies, strict=True):
            for entry, flag in zip(batch, reply, strict=True):
                stored[entry] = bool(flag)
        return stored

    def delete_many(self, keys: Iterable[Any]) -> Plan[int]:
        _, entries = self._entries(keys)
        distinct = list(dict.fromkeys(entries))
        if not distinct:
            return 0
        effects = [
            package_script("cache_delete_many").eval(
                self._many_keys(batch), (self.lock_ttl_ms, self.channel, self.origin)
            )
            for batch in self._batches(distinct)
        ]
        for entry in distinct:
            self.on_invalidate(entry)
        try:
            replies = yield from _batch(effects)
        finally:
            for entry in distinct:
                self.on_invalidate(entry)
        return sum(int(r) for r in replies)

    def check_load(self, key: object, loader: object, ttl: Ttl | None, asynchronous: bool) -> bytes:
        """Validate `get_or_load`'s arguments before any I/O; returns the entry key."""
        entry = self.entry_key(key)
        check_callable(loader, "loader", asynchronous=asynchronous)
        self.check_ttl(ttl)
        return entry

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def get_or_load(
        self, entry: bytes, loader: Callable[[], Any], ttl: Ttl | None, token: str
    ) -> Plan[tuple[Any, bool]]:
        """Read; on a miss load (one loader across processes), or wait and read its result.

        Returns ``(value, refresh)``: ``refresh`` means this caller took the recompute lock
        for a stale or early-expiring entry it is returning at once, and must run `refresh`
        in the background. With ``fail_open``, a backend error runs the loader instead (its
        result returned, not stored).
        """
        value = self.near_get(entry)
        if value is not _MISSING:
            return value, False
        generation = self.near.generation if self.near is not None else 0
        deadline: float | None = None
        pause = 0.01
        while True:
            try:
                status, raw, took, left, written = yield self._get_eval(entry, self.mode, token)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_or_load", exc)
                return (yield Call(loader)), False
            if status in (_FRESH, _EARLY, _STALE):
                value = self._read(entry, raw)
                if value is not _MISSING:
                    self._count("hits")
                    if status == _FRESH:
                        self._near_put(entry, raw, int(left), generation)
                    elif status == _STALE:
                        self._count("stale_served")
                    elif status == _EARLY:
                        self._count("early_refreshes")
                    return value, bool(took)
                # A foreign or corrupt entry: replace it. A fresh one looked like a hit, so no
                # lock was taken: store it as a plain set does (a loader's store needs its lock).
                self._count("misses")
                replace = token if took else ""
                return (yield from self._load(entry, loader, ttl, replace, _text(written))), False
            if took:
                self._count("misses")
                return (yield from self._load(entry, loader, ttl, token, _text(written))), False
            # Another process is loading this key: wait briefly, then read its result.
            deadline, pause = yield from self._wait_for_loader(deadline, pause, repr(entry))

    def _wait_for_loader(
        self, deadline: float | None, pause: float, what: str
    ) -> Plan[tuple[float, float]]:
        """Sleep before reading again keys another process is loading (10 -> 100 ms polls);
        `LockTimeoutError` once ``wait_timeout`` has passed. Returns (deadline, next pause)."""
        now = yield Now()
        if deadline is None:
            deadline = now + self.wait_timeout
        elif now >= deadline:
            raise LockTimeoutError(
                f"cache key(s) {what}: another process held the recompute lock for "
                f"{self.wait_timeout:.3g}s and stored nothing"
            )
        yield Sleep(min(pause, max(0.0, deadline - now)))
        return deadline, min(pause * 1.5, 0.1)

    def _load(
        self,
        entry: bytes,
        loader: Callable[[], Any],
        ttl: Ttl | None,
        token: str,
        generation: str = "",
    ) -> Plan[Any]:
        soft = self.soft_ms(ttl, forever=True)
        started = yield Now()
        self._count("loads")
        negative = False
        try:
            value = yield Call(loader)
            if value is None and self.negative_ms is not None:
                soft, negative = self.negative_ms, True  # and no stale window: absence is cheap
        except Exception:
            self._count("load_errors")
            yield from self._unlock_quietly(entry, token, self.backoff_ms)
            raise
        except BaseException:  # cancelled or interrupted: not the store's fault, let go now
            yield from self._unlock_quietly(entry, token, 0)
            raise
        if _metrics.on:
            _metrics.CACHE_LOAD_SECONDS.record(self._labels, (yield Now()) - started)
        try:
            if value is None and self.negative_ms is None:
                tagged = None
            else:
                tagged = self.encode_entry(value)
        except ConfigurationError:  # a bug in the caller, not a failing store: no backoff
            yield from self._unlock_quietly(entry, token, 0)
            raise
        if tagged is None:  # None is not cached unless negative_ttl is set
            yield from self._unlock_quietly(entry, token, 0)
            return value
        finished = yield Now()
        delta = max(0, round((finished - started) * 1000))
        try:
            yield self._set_eval(
                entry,
                tagged[1],
                soft,
                delta,
                token,
                stale=not negative,
                tag=tagged[0],
                generation=generation,
            )
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("storing a loaded value", exc)
        return value

    def _unlock(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        yield package_script("cache_unlock").eval((self.lock_key(entry),), (token, backoff_ms))

    def _unlock_many(self, entries: list[bytes], token: str, backoff_ms: int) -> Plan[None]:
        """`_unlock_quietly` of several locks in one round trip (per node)."""
        effects = [
            package_script("cache_unlock").eval((self.lock_key(e),), (token, backoff_ms))
            for e in entries
        ]
        try:
            yield from _batch(effects)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("releasing recompute locks", exc)

    def _unlock_quietly(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        """`_unlock`, except that with ``fail_open`` a backend error is logged, not raised
        (the loader's own outcome is what the caller must see)."""
        try:
            yield from self._unlock(entry, token, backoff_ms)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("releasing a recompute lock", exc)

    def refresh(
        self, entry: bytes, loader: Callable[[], Any], ttl: Ttl | None, token: str
    ) -> Plan[None]:
        """Reload a stale or early-expiring entry in the background; on failure keep the old."""
        self._count("refreshes")
        try:
            yield from self._load(entry, loader, ttl, token)
        except Exception as exc:
            message = "refreshing cache key %r failed (%r); the stale value stays in place"
            coalesced(log, ("refresh", type(exc)), message, entry, exc)

    def check_load_many(
        self, keys: Iterable[Any], loader: object, ttl: Ttl | None, asynchronous: bool
    ) -> tuple[list[Any], list[bytes]]:
        """Validate `get_or_load_many`'s arguments before any I/O."""
        listed, entries = self._entries(keys)
        check_callable(loader, "loader", asynchronous=asynchronous)
        self.check_ttl(ttl)
        return listed, entries

    def get_or_load_many(
        self,
        listed: list[Any],
        entries: list[bytes],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[tuple[list[Any], dict[bytes, Any]]]:
        """`get_or_load` for many keys: one read per node, one loader call for the misses.

        Each miss's recompute lock is taken in the same read; the keys whose lock this caller
        got are loaded together (``loader(keys) -> mapping``) and stored in one round trip
        per node; keys another process is loading are read again until it stored them (or
        ``wait_timeout``). Returns the values in the order asked and ``{entry: key}`` of the
        stale or early-expiring entries served whose lock this caller took: the facade
        refreshes those in the background.
        """
        key_of = dict(zip(entries, listed, strict=True))
        values: dict[bytes, Any] = {}
        for entry in key_of:
            value = self.near_get(entry)
            if value is not _MISSING:
                values[entry] = value
        pending = [e for e in key_of if e not in values]
        refresh: dict[bytes, Any] = {}
        near_generation = self.near.generation if self.near is not None else 0
        deadline: float | None = None
        pause = 0.01
        while pending:
            try:
                read = yield from self._read_many(pending, self.mode, token)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_or_load_many", exc)
                loaded = yield from self._call_many(loader, [key_of[e] for e in pending])
                values.update((e, loaded.get(key_of[e])) for e in pending)
                break
            load: dict[bytes, str] = {}
            waiting = []
            for entry in pending:
                status, raw, took, left, generation = read[entry]
                if status in (_FRESH, _EARLY, _STALE):
                    value = self._read(entry, raw)
                    if value is not _MISSING:
                        self._count("hits")
                        values[entry] = value
                        if status == _FRESH:
                            self._near_put(entry, raw, left, near_generation)
                        elif status == _STALE:
                            self._count("stale_served")
                        else:
                            self._count("early_refreshes")
                        if took:
                            refresh[entry] = key_of[entry]
                        continue
                    load[entry] = generation  # a foreign or corrupt entry: replace it
                elif took:
                    load[entry] = generation
                else:
                    waiting.append(entry)
            if load:
                self._count("misses", len(load))
                loaded_values = yield from self._load_many(load, key_of, loader, ttl, token)
                values.update(loaded_values)
            pending = waiting
            if not pending:
                break
            what = f"{pending[:3]!r}{'...' if len(pending) > 3 else ''}"
            deadline, pause = yield from self._wait_for_loader(deadline, pause, what)
        return [values.get(entry) for entry in entries], refresh

    def _call_many(
        self, loader: Callable[[list[Any]], Any], keys: list[Any]
    ) -> Plan[Mapping[Any, Any]]:
        loaded = yield Call(loader, (keys,))
        if not isinstance(loaded, Mapping):
            raise ConfigurationError(
                f"a get_or_load_many loader must return a mapping of key to value, not "
                f"{type(loaded).__name__}"
            )
        return loaded

    def _load_many(
        self,
        load: dict[bytes, str],
        key_of: dict[bytes, Any],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[dict[bytes, Any]]:
        """Load the entries whose lock we hold (one loader call) and store them conditionally."""
        started = yield Now()
        self._count("loads", len(load))
        try:
            loaded = yield from self._call_many(loader, [key_of[e] for e in load])
            values = {e: loaded.get(key_of[e]) for e in load}
            encoded: dict[bytes, tuple[str, bytes, int]] = {}
            for entry, value in values.items():
                if value is None and self.negative_ms is None:
                    continue
                soft = self.negative_ms if value is None else self.soft_ms(ttl, forever=True)
                tag, payload = self.encode_entry(value)
                encoded[entry] = (tag, payload, soft or 0)
        except BaseException as exc:
            failed = isinstance(exc, Exception) and not isinstance(exc, ConfigurationError)
            if failed:
                self._count("load_errors", len(load))
            yield from self._unlock_many(list(load), token, self.backoff_ms if failed else 0)
            raise
        finished = yield Now()
        if _metrics.on:
            _metrics.CACHE_LOAD_SECONDS.record(self._labels, finished - started)
        delta = max(0, round((finished - started) * 1000))
        # Entries the loader gave nothing for (or None, without negative_ttl) are not cached:
        # let their locks go at once.
        yield from self._unlock_many([e for e in load if e not in encoded], token, 0)
        try:
            if encoded:
                yield from self._store_many(encoded, token, load, delta)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("storing loaded values", exc)
        return values

    def refresh_many(
        self,
        refresh: dict[bytes, Any],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[None]:
        """Reload stale or early-expiring entries in the background; on failure keep them."""
        self._count("refreshes", len(refresh))
        try:
            yield from self._load_many(dict.fromkeys(refresh, ""), refresh, loader, ttl, token)
        except Exception as exc:
            message = "refreshing %d cache keys failed (%r); the stale values stay in place"
            coalesced(log, ("refresh", type(exc)), message, len(refresh), exc)

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
                tag, payload = self.encode_entry(v)
                effects.append(self._set_eval(entry, payload, self.soft_ms(ttl), 0, token, tag=tag))
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


def _raise_first(replies: list[Any]) -> list[Any]:
    """The replies of a `Pipeline`, raising the first failed item's error."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


def _batch(effects: Sequence[Eval | Command]) -> Plan[list[Any]]:
    """Run commands in one round trip (per node): one alone, several in a pipeline."""
    if len(effects) == 1:
        return [(yield effects[0])]
    if not effects:
        return []
    return _raise_first((yield Pipeline(tuple(effects))))


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
        wait_replicas: int = 0,
    ) -> None:
        check_callable(flush, "flush", asynchronous=asynchronous)
        self.wait_replicas = wait_replicas  # checked against the client's kind by the facade
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
                script = package_script("cache_wb_write").eval(
                    (entry, cache.lock_key(entry), self.stream, cache.gen_key(entry)),
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
                reply = yield from replicated(script, self.wait_replicas, "the queued write")
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
