"""``redis-patterns bench``: the benchmark harness (ops/s, mean and p99 latency, commands per
operation) and the package's built-in benchmarks; ``make bench`` adds the peers'.

A benchmark is a function registered with `@benchmark`; it receives a sync client and a unique
key prefix and returns the zero-argument operation to time. The harness warms it up, times N
sequential calls, then counts the commands a few calls send (``MONITOR``, exact). Floors
(raw ``GET``, ``EVALSHA`` of a trivial script) come first so every row can be read against them.

An operation may carry a ``close`` attribute, called after its run (e.g. to stop a subscriber).
Benchmarks never run as timed tests; ``make bench`` and ``redis-patterns bench`` run them.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import redis

from .._embedded import EmbeddedServer
from .._scripting import Script
from .._sync.bounded_counter import BoundedCounter
from ..testing.counter import CommandCounter

__all__ = ["BenchResult", "benchmark", "main", "run_one"]

Operation = Callable[[], object]
Setup = Callable[[redis.Redis, str], Operation]


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One benchmark's numbers (latencies in microseconds)."""

    name: str
    group: str
    operations: int
    ops_per_second: float
    mean_us: float
    p99_us: float
    commands_per_op: float


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    group: str
    setup: Setup


_REGISTRY: dict[str, _Entry] = {}


def benchmark(name: str, group: str = "ours") -> Callable[[Setup], Setup]:
    """Register ``setup(client, prefix) -> operation`` as ``name`` (group: floor, ours or peer)."""

    def register(setup: Setup) -> Setup:
        _REGISTRY[name] = _Entry(name, group, setup)
        return setup

    return register


def registered() -> list[str]:
    order = {"floor": 0, "ours": 1, "peer": 2}
    return [e.name for e in sorted(_REGISTRY.values(), key=lambda e: order.get(e.group, 3))]


def run_one(
    name: str,
    client: redis.Redis,
    nodes: Sequence[tuple[str, int]],
    operations: int,
    *,
    warmup: int = 100,
    on_progress: Callable[[int], None] | None = None,
) -> BenchResult:
    """Time ``operations`` sequential calls of benchmark ``name`` and count its commands."""
    entry = _REGISTRY[name]
    # Letters, digits, '-' and '.' only: valid as a key prefix and as any pattern's namespace.
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    op = entry.setup(client, f"bench-{uuid.uuid4().hex[:8]}-{slug}")
    for _ in range(warmup):
        op()
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    step = max(1, operations // 50)
    for index in range(operations):
        t0 = clock()
        op()
        latencies.append(clock() - t0)
        if on_progress is not None and (index + 1) % step == 0:
            on_progress(step)
    elapsed = clock() - started
    sampled = 20
    with CommandCounter(nodes) as seen:
        for _ in range(sampled):
            op()
    close = getattr(op, "close", None)  # an operation may own resources (a listener thread)
    if callable(close):
        close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return BenchResult(
        name=name,
        group=entry.group,
        operations=operations,
        ops_per_second=operations / elapsed,
        mean_us=statistics.fmean(latencies) * 1e6,
        p99_us=p99 * 1e6,
        commands_per_op=seen.count / sampled,
    )


def _print_table(results: Sequence[BenchResult], floor: float | None) -> None:
    headers = ["benchmark", "group", "ops/s", "vs GET", "mean µs", "p99 µs", "cmds/op"]
    rows = [
        [
            r.name,
            r.group,
            f"{r.ops_per_second:,.0f}",
            f"{r.ops_per_second / floor:.2f}x" if floor else "-",
            f"{r.mean_us:.1f}",
            f"{r.p99_us:.1f}",
            f"{r.commands_per_op:g}",
        ]
        for r in results
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return
    table = Table(title="redis-patterns benchmarks (one client, sequential calls)")
    for header in headers:
        table.add_column(header, justify="left" if header in ("benchmark", "group") else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _progress(
    total: int,
) -> tuple[Callable[[str], None], Callable[[int], None], Callable[[], None]]:
    """A progress bar (rich when available and on a terminal, dots otherwise)."""
    try:
        from rich.progress import Progress
    except ImportError:
        Progress = None  # type: ignore[assignment,misc]
    if Progress is not None and sys.stdout.isatty():
        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("benchmarks", total=total)

        def describe(name: str) -> None:
            progress.update(task, description=name)

        def advance(n: int) -> None:
            progress.advance(task, n)

        return describe, advance, progress.stop

    def describe_plain(name: str) -> None:
        print(f"running {name} ...", flush=True)

    return describe_plain, lambda n: None, lambda: None


def main(*, url: str | None = None, operations: int = 2000, only: Sequence[str] = ()) -> int:
    """Run the registered benchmarks (or ``only`` those) and print a table; returns exit status."""
    names = [n for n in registered() if not only or n in only]
    unknown = set(only) - set(registered())
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {registered()}")
        return 2
    server: EmbeddedServer | None = None
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
    parsed = urlparse(url)
    nodes = [(parsed.hostname or "127.0.0.1", parsed.port or 6379)]
    client: Any = redis.Redis.from_url(url)
    describe, advance, finish = _progress(len(names) * operations)
    results: list[BenchResult] = []
    try:
        for name in names:
            describe(name)
            results.append(run_one(name, client, nodes, operations, on_progress=advance))
    finally:
        finish()
        client.close()
        if server is not None:
            server.stop()
            server.cleanup()
    floor = next((r.ops_per_second for r in results if r.name == "redis-py GET"), None)
    _print_table(results, floor)
    return 0


# --- built-in benchmarks -------------------------------------------------------------------


@benchmark("redis-py GET", group="floor")
def _bench_get(client: redis.Redis, prefix: str) -> Operation:
    key = f"{prefix}:k"
    client.set(key, "value")
    return lambda: client.get(key)


_TRIVIAL = Script("return 1", name="trivial")


@benchmark("EVALSHA trivial script", group="floor")
def _bench_evalsha(client: redis.Redis, prefix: str) -> Operation:
    key = f"{prefix}:k"
    return lambda: _TRIVIAL(client, keys=[key])


@benchmark("BoundedCounter.incr")
def _bench_bounded_counter(client: redis.Redis, prefix: str) -> Operation:
    counter = BoundedCounter(client, f"{prefix}:counter", 2**62)
    return lambda: counter.incr()


@benchmark("Lock acquire+release")
def _bench_lock(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.lock import Lock

    lock = Lock(client, f"{prefix}:lock", ttl=10)

    def cycle() -> None:
        lock.acquire()
        lock.release()

    return cycle


@benchmark("TokenBucket.hit")
def _bench_token_bucket(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.ratelimit import TokenBucket

    limiter = TokenBucket(client, capacity=10**9, refill_rate=10**6)
    key = f"{prefix}:user"
    return lambda: limiter.hit(key)


@benchmark("SlidingLog.hit")
def _bench_sliding_log(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.ratelimit import SlidingLog

    limiter = SlidingLog(client, limit=100, window=0.05)
    key = f"{prefix}:user"
    return lambda: limiter.hit(key)


@benchmark("Cache.get (hit)")
def _bench_cache_hit(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.cache import Cache

    cache = Cache(client, prefix, ttl=600)
    cache.set("k", {"name": "Ada", "roles": ["admin"]})
    return lambda: cache.get("k")


@benchmark("Cache.get (near-cache hit)")
def _bench_near_cache_hit(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.cache import Cache

    cache = Cache(client, prefix, ttl=600, local=100)
    cache.set("k", {"name": "Ada", "roles": ["admin"]})
    cache.get("k")

    def hit() -> object:
        return cache.get("k")

    hit.close = cache.close  # type: ignore[attr-defined]  # stops the invalidation subscriber
    return hit


@benchmark("SessionStore.get")
def _bench_session_get(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.sessions import SessionStore

    store = SessionStore(client, namespace=prefix, idle_ttl=600)
    sid = store.create({"user": "ada", "cart": [1, 2, 3]}).id
    return lambda: store.get(sid)


@benchmark("Leaderboard.around(5)")
def _bench_leaderboard_around(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.leaderboard import Leaderboard

    board = Leaderboard(client, prefix)
    board.add_many({f"p{i}": float(i % 997) for i in range(10_000)})
    return lambda: board.around("p4242", 5)


@benchmark("StreamQueue.add")
def _bench_stream_add(client: redis.Redis, prefix: str) -> Operation:
    from .._sync.streams import StreamQueue

    queue = StreamQueue(client, prefix, max_len=10_000)
    return lambda: queue.add({"event": "signup", "user": 42})
