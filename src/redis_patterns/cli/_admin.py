"""What the operating commands and the dashboard read: queues, held locks, limiter state, boards.

Discovery runs ``SCAN`` with a ``MATCH`` pattern built from escaped user input
(`redis_patterns._keys.glob_match`) and ``TYPE``, on every master of a cluster. Each listing is
capped (`MAX_LISTED`), so a huge keyspace cannot make a command or a dashboard page unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._core.leaderboard import SEQUENCE_SPAN
from .._core.streams import DeadLetter, PendingEntry, StreamInfo
from .._errors import ConfigurationError
from .._keys import check_name, glob_match, make_key
from .._sync.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from .._sync.streams import StreamQueue
from .._validate import check_number

__all__ = [
    "MAX_LISTED",
    "Board",
    "HeldLock",
    "LimitState",
    "QueueSummary",
    "Snapshot",
    "board_keys",
    "held_locks",
    "leaderboards",
    "limit_state",
    "list_queues",
    "lock_keys",
    "open_client",
    "queue_names",
    "queue_snapshot",
    "read_locks",
    "scan",
]

MAX_LISTED = 1000
SCAN_COUNT = 500
Client = redis.Redis | redis.cluster.RedisCluster


def open_client(url: str, *, timeout: float = 5.0) -> Client:
    """A client for ``url``: a cluster client if the server is a cluster node.

    Finite timeouts, no automatic re-sending (a replay or purge must not run twice).

    Raises:
        redis.RedisError: the server cannot be reached.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    probe = redis.Redis.from_url(url, **options)
    try:
        cluster = str(probe.info("cluster").get("cluster_enabled", "0")) == "1"
    except BaseException:
        probe.close()
        raise
    if not cluster:
        return probe
    probe.close()
    return redis.cluster.RedisCluster.from_url(url, **options)


def _text(value: object) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def scan(client: Client, match: bytes, kind: str | None = None) -> Iterator[bytes]:
    """Every key matching ``match`` (of type ``kind``), on every master; stops at `MAX_LISTED`."""
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = [n.redis_connection for n in client.get_primaries()]
    else:
        nodes = [client]
    seen = 0
    for node in nodes:
        for key in node.scan_iter(match=match, count=SCAN_COUNT, _type=kind):
            yield key
            seen += 1
            if seen >= MAX_LISTED:
                return


def _inner(key: bytes, pattern: str) -> tuple[str, str]:
    """``{pattern:name}:suffix`` -> (name, suffix)."""
    head = b"{" + pattern.encode() + b":"
    name, _, rest = key[len(head) :].partition(b"}")
    return _text(name), _text(rest[1:]) if rest.startswith(b":") else ""


# --- queues ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One consumer group of one queue (``group`` is None for a queue with no group yet)."""

    name: str
    group: str | None
    length: int
    lag: int | None
    pending: int
    consumers: int
    oldest_pending_age: float | None
    dead_letters: int


def _groups(client: Client, key: bytes) -> list[str]:
    try:
        return [_text(g["name"]) for g in client.xinfo_groups(key)]
    except redis.ResponseError:
        return []


def queue_names(client: Client, pattern: str = "*") -> list[str]:
    """The names of the stream queues (``{stream:<name>}``) matching ``pattern``."""
    match = b"{stream:" + glob_match(pattern, "pattern") + b"}"
    return sorted({_inner(key, "stream")[0] for key in scan(client, match, "stream")})


def list_queues(client: Client, pattern: str = "*") -> list[QueueSummary]:
    """Every stream queue whose name matches ``pattern``, one row per consumer group."""
    rows: list[QueueSummary] = []
    for name in queue_names(client, pattern):
        key = make_key("stream", check_name(name, "name"))
        groups: list[str | None] = [*_groups(client, key)] or [None]
        for group in groups:
            info = StreamQueue(client, name, group or "workers").info()
            rows.append(
                QueueSummary(
                    name=name,
                    group=group,
                    length=info.length,
                    lag=info.lag if group else None,
                    pending=info.pending,
                    consumers=len(info.consumers),
                    oldest_pending_age=info.oldest_pending_age,
                    dead_letters=info.dead_letters,
                )
            )
    return rows


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A queue as the dashboard and ``queue info`` show it."""

    name: str
    group: str
    groups: tuple[str, ...]
    info: StreamInfo
    pending: tuple[PendingEntry, ...]
    dead: tuple[DeadLetter, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_snapshot(
    client: Client, name: str, group: str | None = None, *, count: int = 20
) -> Snapshot:
    """Info, the oldest ``count`` pending entries and dead letters of one queue.

    ``group`` defaults to the stream's only group, else ``workers``.

    Raises:
        ConfigurationError: an invalid name or group.
    """
    key = make_key("stream", check_name(name, "name"))
    groups = tuple(_groups(client, key))
    chosen = group or (groups[0] if len(groups) == 1 else "workers")
    queue = StreamQueue(client, name, chosen)
    return Snapshot(
        name=name,
        group=chosen,
        groups=groups,
        info=queue.info(),
        pending=tuple(queue.pending_entries(count)),
        dead=tuple(queue.dead_letters(count)),
    )


# --- locks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldLock:
    """A lock held now: its name, seconds left (None: the key has no TTL) and its fence.

    The owner token is never read out: whoever sees it could release the lock.
    """

    name: str
    ttl: float | None
    fence: int | None


def lock_keys(client: Client, pattern: str = "*") -> list[bytes]:
    """The keys of locks (``{lock:<name>}``, also Redlock's on this server) matching ``pattern``."""
    match = b"{lock:" + glob_match(pattern, "pattern") + b"}"
    return sorted(set(scan(client, match, "string")))


def held_locks(client: Client, pattern: str = "*") -> list[HeldLock]:
    """Locks held now whose name matches ``pattern`` (``*`` wildcards)."""
    return read_locks(client, lock_keys(client, pattern))


def read_locks(client: Client, keys: list[bytes]) -> list[HeldLock]:
    """The locks at ``keys`` still held now, with their TTL and fence (pipelined by 100)."""
    locks: list[HeldLock] = []
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.pttl(key)
            pipe.get(key + b":fence")
        replies = pipe.execute()
        for i, key in enumerate(chunk):
            pttl, fence = int(replies[2 * i]), replies[2 * i + 1]
            if pttl == -2:
                continue  # released since the scan
            locks.append(
                HeldLock(
                    name=_inner(key, "lock")[0],
                    ttl=None if pttl < 0 else pttl / 1000,
                    fence=None if fence is None else int(fence),
                )
            )
    return locks


# --- rate limiters ---------------------------------------------------------------------------

ALGORITHMS = {
    "fw": "fixed-window",
    "sl": "sliding-log",
    "sw": "sliding-window",
    "tb": "token-bucket",
    "gcra": "gcra",
}
# The Redis type of each algorithm's state (docs/ratelimit.md, "Key layout"): a fixed window's
# counter, a token bucket's and GCRA's theoretical arrival time are strings.
_SHAPES = {
    "fixed-window": "string",
    "sliding-log": "zset",
    "sliding-window": "hash",
    "token-bucket": "string",
    "gcra": "string",
}


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit's state for one limited key, read without consuming anything."""

    key: str
    exists: bool
    type: str
    ttl: float | None
    algorithm: str | None
    fields: dict[str, str]
    decision: dict[str, Any] | None
    others: tuple[str, ...] = ()


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{what}: {text!r} is not a number") from None
    return float(check_number(value, what, positive=True))


def limiter_from_spec(client: Client, spec: str, name: str) -> RateLimiter:
    """``fixed-window:100:60``, ``sliding-log:..``, ``sliding-window:..`` (LIMIT:WINDOW s),
    ``token-bucket:100:2.5`` (CAPACITY:RATE per s), ``gcra:100:60[:BURST]`` (LIMIT:PERIOD s).

    Raises:
        ConfigurationError: an unknown algorithm or bad numbers.
    """
    kind, *parts = spec.split(":")
    classes: dict[str, Any] = {
        "fixed-window": FixedWindow,
        "sliding-log": SlidingLog,
        "sliding-window": SlidingWindow,
    }
    try:
        if kind in classes and len(parts) == 2:
            limiter: RateLimiter = classes[kind](
                client, int(parts[0]), _number(parts[1], "window"), name=name
            )
            return limiter
        if kind == "token-bucket" and len(parts) == 2:
            return TokenBucket(client, int(parts[0]), _number(parts[1], "rate"), name=name)
        if kind == "gcra" and len(parts) in (2, 3):
            burst = int(parts[2]) if len(parts) == 3 else None
            return GCRA(client, int(parts[0]), _number(parts[1], "period"), burst, name=name)
    except ValueError as exc:
        raise ConfigurationError(f"limiter spec {spec!r}: {exc}") from exc
    raise ConfigurationError(
        f"limiter spec {spec!r}: expected fixed-window|sliding-log|sliding-window:LIMIT:WINDOW, "
        "token-bucket:CAPACITY:RATE or gcra:LIMIT:PERIOD[:BURST]"
    )


def _from_default_name(client: Client, name: str) -> RateLimiter | None:
    """The limiter whose default key suffix is ``name`` (``fw:100:60000000``...), if it is one.

    The suffix holds the limit and its parameters in internal units (µs); see
    docs/ratelimit.md, "Key layout".
    """
    code, _, rest = name.partition(":")
    first, _, second = rest.partition(":")
    try:
        limit, value = int(first), float(second)
    except ValueError:
        return None
    if code in ("fw", "sl", "sw"):
        return limiter_from_spec(client, f"{ALGORITHMS[code]}:{limit}:{value / 1e6}", name)
    if code == "tb":
        return TokenBucket(client, limit, value * 1e6, name=name)
    if code == "gcra":
        # The suffix keeps burst and the emission interval (µs per unit), not the limit: 1,000
        # units per 1,000 intervals has that interval (to the µs, as periods are whole ms).
        return GCRA(client, 1000, max(round(value), 1) / 1000, limit, name=name)
    return None


def limit_state(client: Client, name: str, key: str, spec: str | None = None) -> LimitState:
    """The state of limit ``name`` for the limited ``key``: raw fields, TTL, and a peek.

    ``name`` is the limit's key suffix: its ``name=`` or the default (``fw:100:60000000``,
    see docs/ratelimit.md). The decision (what a hit of cost 1 would get now) comes from the
    limiter's own ``peek``, which writes nothing; for a custom name it needs ``spec``.

    Raises:
        ConfigurationError: an invalid name, key or spec.
    """
    raw_key = check_name(key, "key")
    limiter = limiter_from_spec(client, spec, name) if spec else _from_default_name(client, name)
    redis_key = make_key("ratelimit", raw_key, check_name(name, "name").decode())
    pipe = client.pipeline(transaction=False)
    pipe.type(redis_key)
    pipe.pttl(redis_key)
    kind, pttl = (_text(v) for v in pipe.execute())
    fields: dict[str, str] = {}
    if kind == "hash":
        fields = {_text(k): _text(v) for k, v in client.hgetall(redis_key).items()}
    elif kind == "string":
        fields = {"value": _text(client.get(redis_key))}
    elif kind == "zset":
        fields = {"entries": str(client.zcard(redis_key))}
        oldest = client.zrange(redis_key, 0, 0, withscores=True)
        if oldest:
            fields["oldest_us"] = f"{oldest[0][1]:.0f}"
    exists = kind != "none"
    algorithm = ALGORITHMS.get(name.partition(":")[0]) if spec is None else spec.split(":")[0]
    if algorithm is None and exists:
        guess = [a for a, shape in _SHAPES.items() if shape == kind]
        algorithm = guess[0] if len(guess) == 1 else None
    decision = None
    if limiter is not None and (not exists or _SHAPES.get(algorithm or "") == kind):
        decision = asdict(limiter.peek(key))
    others: tuple[str, ...] = ()
    if not exists:
        prefix = b"{ratelimit:" + glob_match(key, "key", wildcards=False) + b"}:*"
        others = tuple(sorted(_inner(k, "ratelimit")[1] for k in scan(client, prefix)))
    return LimitState(
        key=_text(redis_key),
        exists=exists,
        type=kind,
        ttl=None if int(pttl) < 0 else int(pttl) / 1000,
        algorithm=algorithm,
        fields=fields,
        decision=decision,
        others=others,
    )


# --- leaderboards ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Board:
    """A leaderboard's size and top entries (``period`` is a timed board's period suffix)."""

    name: str
    period: str
    members: int
    top: tuple[tuple[str, float], ...]


def board_keys(client: Client) -> list[bytes]:
    """The keys of every leaderboard (``{leaderboard:<name>}[:<period>]``)."""
    return sorted(set(scan(client, b"{leaderboard:*", "zset")))


def leaderboards(client: Client, top: int = 10, keys: list[bytes] | None = None) -> list[Board]:
    """Each leaderboard (all of them, or those at ``keys``) with its ``top`` entries."""
    boards: list[Board] = []
    for key in board_keys(client) if keys is None else keys:
        if not client.exists(key):
            continue  # gone since it was found
        name, period = _inner(key, "leaderboard")
        # ties="earliest" stores composite scores and keeps a sequence counter beside them.
        earliest = bool(client.exists(key + b":seq"))
        pairs: Any = client.zrevrange(key, 0, top - 1, withscores=True)
        entries = tuple(
            (_text(m), float(math.floor(s / SEQUENCE_SPAN)) if earliest else float(s))
            for m, s in pairs
        )
        boards.append(Board(name, period, int(client.zcard(key)), entries))
    return boards
