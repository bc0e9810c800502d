"""What every cache plan shares: configuration, keys (buckets, generations), entries' header
encoding and decoding, the near cache's hooks and the scripts' effects."""

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
from .._plan import Command, Eval, Pipeline, Plan
from .._script import package_script
from .._serializers import Serializer, get_serializer
from .._validate import Duration, check_int, duration_ms
from .cache_near import NearCache
from .cache_types import Flights, Forever, NoFlights, Stampede, Ttl
from .pubsub import Message

__all__ = ["BUCKETS", "MAX_BATCH", "MAX_EXACT", "CacheEntries", "KeyBuilder"]

log = logging.getLogger("redis_patterns.cache")

_MODES = {None: 3, "lock": 1, "xfetch": 2}  # 0 is a plain read (get)
_MISS, _FRESH, _STALE, _EARLY, _MALFORMED = 0, 1, 2, 3, -1
_TAG = re.compile(r"^[A-Za-z0-9_.+-]{1,32}$")
_MISSING: Any = object()
_SLOW: Any = object()  # a fast read found an entry only the read script can judge

BUCKETS = 1024  # hash tags of a namespace on a cluster: each has its own generation counter
MAX_BATCH = 500  # keys per script call of the bulk operations: bounds the time a script runs
MAX_EXACT = 2**53 - 1  # incr/decr work on integers a Lua number (a double) holds exactly

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

    # --- the scripts' effects ------------------------------------------------------------

    def _get_eval(self, entry: bytes, mode: int, token: str, r: float | None = None) -> Eval:
        if r is None:
            r = 1.0 - self._rng.random()  # in (0, 1]: log(r) is finite
        return package_script("cache_get").eval(
            (entry, self.lock_key(entry), self.gen_key(entry)),
            (mode, token, self.lock_ttl_ms, self.beta, r),
        )

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

    def _write(self, entries: list[bytes], effect: Eval) -> Plan[Any]:
        """Send a write, dropping this process's near copies before it and after its reply."""
        for entry in entries:
            self.on_invalidate(entry)
        try:
            return (yield effect)
        finally:
            for entry in entries:  # the reply arrived: no read begun before now may store
                self.on_invalidate(entry)

    # --- hits without the script --------------------------------------------------------

    def lean_read(self, entry: bytes) -> Plan[tuple[Any, bytes, int]]:
        """The entry, its generation counter and the server's clock in one round trip
        (``MGET`` + ``TIME`` pipelined): the value never passes through Lua. Returns
        ``(raw entry or None, generation, server ms)``."""
        (raw, generation), (seconds, micros) = _raise_first(
            (yield Pipeline((Command(("MGET", entry, self.gen_key(entry))), Command(("TIME",)))))
        )
        return raw, generation or b"0", int(seconds) * 1000 + int(micros) // 1000

    def judge(
        self, raw: bytes | None, generation: bytes, now_ms: int, r: float | None = None
    ) -> tuple[int, int]:
        """``(status, ms until soft expiry)`` of a `lean_read`, as ``cache_get.lua`` judges it
        (without taking a lock): `_FRESH` (-1: no soft expiry), `_STALE`, `_MISS` (absent, or
        of an older generation), `_MALFORMED`, or `_EARLY` for a fresh entry that xfetch
        would refresh early with the random draw ``r``."""
        if raw is None:
            return _MISS, 0
        parts = raw.split(b":", 5)
        if len(parts) != 6 or parts[0] != b"rp2":
            return _MALFORMED, 0
        soft, took, written = parts[2].removeprefix(b"="), parts[3], parts[4]
        if not (soft.isdigit() and took.isdigit() and written.isdigit()):
            return _MALFORMED, 0
        if written != generation:
            return _MISS, 0
        if soft == b"0":
            return _FRESH, -1
        left = int(soft) - now_ms
        if left <= 0:
            return _STALE, 0
        if r is not None and int(took) * self.beta * -math.log(r) >= left:
            return _EARLY, left
        return _FRESH, left

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
