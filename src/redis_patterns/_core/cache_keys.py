"""What every cache plan shares: configuration, keys (buckets, generations, batches), stats
and metrics, failing open."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import random
import re
import secrets
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import _metrics
from .._errors import BackendError, ConfigurationError
from .._keys import check_name, make_key
from .._logging import coalesced
from .._plan import Command, Eval, Pipeline, Plan, raise_first
from .._serializers import Serializer, get_serializer
from .._validate import Duration, check_int, duration_ms
from .cache_near import NearCache
from .cache_types import Flights, Forever, NoFlights, Stampede, Ttl

__all__ = ["BIG_VALUE_BYTES", "BUCKETS", "MAX_BATCH", "MAX_EXACT", "CacheEntries", "KeyBuilder"]

log = logging.getLogger("redis_patterns.cache")

_MODES = {None: 3, "lock": 1, "xfetch": 2}  # 0 is a plain read (get)
_MISS, _FRESH, _STALE, _EARLY, _MALFORMED = 0, 1, 2, 3, -1
_TAG = re.compile(r"^[A-Za-z0-9_.+-]{1,32}$")
_MISSING: Any = object()
_SLOW: Any = object()  # a fast read found an entry only the read script can judge

BUCKETS = 1024  # hash tags of a namespace on a cluster: each has its own generation counter
MAX_BATCH = 500  # keys per script call of the bulk operations: bounds the time a script runs
MAX_EXACT = 2**53 - 1  # incr/decr work on integers a Lua number (a double) holds exactly
# From this size (bytes) up a value's store keeps it out of Lua: MULTI, a prep script, APPEND,
# a commit script, EXEC. Below it the one script costs the server less (docs/cache.md, "Big
# values": about 8 KiB on Redis 7.0, 12 KiB on Valkey 9).
BIG_VALUE_BYTES = 16 * 1024

_NOT_INTEGER, _OVERFLOW = -1, -2


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


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _server_ms(time_reply: Sequence[Any]) -> int:
    """A ``TIME`` reply (seconds, microseconds) as the server's clock in ms, as the scripts
    compute it."""
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def _batch(effects: Sequence[Eval | Command]) -> Plan[list[Any]]:
    """Run commands in one round trip (per node): one alone, several in a pipeline."""
    if len(effects) == 1:
        return [(yield effects[0])]
    if not effects:
        return []
    return raise_first((yield Pipeline(tuple(effects))))


# `stats` entries that are also metrics
_COUNTED = {
    "hits": _metrics.CACHE_HITS,
    "misses": _metrics.CACHE_MISSES,
    "stale_served": _metrics.CACHE_STALE,
    "loads": _metrics.CACHE_LOADS,
    "load_errors": _metrics.CACHE_LOAD_ERRORS,
}


class CacheEntries:
    """Validated configuration, keys and entries shared by every plan of `CacheCore`."""

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
        lean_hits: bool = False,
        asynchronous: bool = False,
        flights: Flights | None = None,
        spawn: Callable[[Plan[Any]], None] | None = None,
    ) -> None:
        ns = check_name(namespace, "namespace")
        if b":" in ns:
            raise ConfigurationError(
                f"namespace must not contain ':' (got {namespace!r}): 'a' + key 'b:c' would "
                "collide with namespace 'a:b' + key 'c'; use '.' or '-', e.g. 'users.v2'"
            )
        self.namespace = ns
        # A standalone entry's key is this head, the key and "}"; its generation is one key.
        self._entry_head = b"{cache:" + ns + b":"
        self._gen_key = make_key("cache", ns, "gen")
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
        # A payload this big or bigger is stored without passing through Lua (`_set`).
        self.big_value_bytes = BIG_VALUE_BYTES
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
        # Whether reads judge a hit here (`lean_read`: MGET + TIME) rather than in the read
        # script: the facade says so for a standalone client. Not on a cluster, where the
        # clock must be the entry's node's and TIME names no key to route it by; plans driven
        # without a facade keep the script.
        self.lean_hits = lean_hits and not cluster
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
        # From the facade: its flavour (loaders must match it), its single-flight (one load
        # per key at a time in this process; none: every caller loads) and how it starts a
        # background plan (a refresh; none: the plan refreshes before it returns).
        self.asynchronous = asynchronous
        self.flights: Flights = NoFlights() if flights is None else flights
        self.spawn = spawn

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
            return self._entry_head + raw + b"}"  # make_key("cache", namespace + b":" + raw)
        bucket = zlib.crc32(raw) % BUCKETS
        return make_key("cache", self.namespace + b":" + str(bucket).encode()) + b":v:" + raw

    def lock_key(self, entry: bytes) -> bytes:
        if not self.cluster:
            return entry + b":lock"
        tag = entry.index(b"}") + 1  # the namespace and the bucket hold no brace
        return entry[:tag] + b":l:" + entry[tag + 3 :]

    def scratch_key(self, entry: bytes) -> bytes:
        """Where a big value's store assembles the entry (header, then the payload) before
        renaming it into place, in the entry's slot; it exists only inside that MULTI/EXEC
        block. Standalone ``...:set`` after the entry; cluster ``{...}:w:<key>``."""
        if not self.cluster:
            return entry + b":set"
        tag = entry.index(b"}") + 1
        return entry[:tag] + b":w:" + entry[tag + 3 :]

    def gen_key(self, entry: bytes) -> bytes:
        """The generation counter that `clear` increments, for ``entry``."""
        if not self.cluster:
            return self._gen_key
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

    # --- batches --------------------------------------------------------------------------

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
