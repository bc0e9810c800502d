"""Benchmark: our limiters vs `limits` and `pyrate-limiter` on one server; plus memory per key.

Run: ``.venv/bin/python -m benchmarks.bench_ratelimit [--url URL] [-n HITS]`` (peers installed by
hand: ``pip install limits pyrate-limiter``; they are not dependencies). Prints Markdown tables:

1. per limiter: hits/s (one thread, sequential, all admitted; best of 5 interleaved rounds),
   commands sent per hit (counted with MONITOR), and how many of 16 threads x 50 hits a limit
   of 100 admits (exact = 100);
2. memory per key (``MEMORY USAGE``) after 1 and after 100 hits, with the seed's recipes
   (alone with ``--memory-only``, as ``make bench-peers`` runs it).

The harness (``python -m benchmarks.run``) reuses the limiters and the admission probe defined
here and measures more per hit (server µs, bytes, round trips).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from redis_patterns import (
    GCRA,
    EmbeddedServer,
    FixedWindow,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from redis_patterns._core.ratelimit import MAX_LOG_ENTRIES
from redis_patterns.testing.counter import CommandCounter

DAY = 86400
Hit = Callable[[str], bool]


# Each limiter once, for the sync and the asyncio classes: name -> (class, arguments).
OURS: dict[str, tuple[str, Callable[[int, int], tuple[Any, ...]]]] = {
    "redis-patterns FixedWindow": ("FixedWindow", lambda limit, window: (limit, window)),
    # a sliding log holds at most 5,000 entries (MAX_LOG_ENTRIES): enough for every hit of a run
    "redis-patterns SlidingLog": (
        "SlidingLog",
        lambda limit, window: (min(limit, MAX_LOG_ENTRIES), window),
    ),
    "redis-patterns SlidingWindow": ("SlidingWindow", lambda limit, window: (limit, window)),
    # TokenBucket and GCRA refill so slowly that nothing refills during a run: ``limit`` in all
    "redis-patterns TokenBucket": (
        "TokenBucket",
        lambda limit, window: (limit, limit / window / 1000),
    ),
    # a full burst must drain within 10^9 s: ``limit`` per ``window * 1000``, burst ``limit``
    "redis-patterns GCRA": ("GCRA", lambda limit, window: (limit, window * 1000, limit)),
}


def make_ours(client: Any, name: str, limit: int, window: int, *, aio: bool = False) -> Any:
    """Our limiter ``name`` (sync, or asyncio with ``aio``) at ``limit`` per ``window`` s."""
    import redis_patterns

    cls, arguments = OURS[name]
    factory = getattr(redis_patterns, ("Async" if aio else "") + cls)
    return factory(client, *arguments(limit, window))


def ours(client: redis.Redis, limit: int, window: int) -> dict[str, Hit]:
    def hitter(limiter: RateLimiter) -> Hit:
        return lambda key: limiter.hit(key).allowed

    return {name: hitter(make_ours(client, name, limit, window)) for name in OURS}


LIMITS_STRATEGIES = {
    "limits fixed window": "FixedWindowRateLimiter",
    "limits moving window": "MovingWindowRateLimiter",
    "limits sliding window counter": "SlidingWindowCounterRateLimiter",
}


def limits_hitter(url: str, name: str, limit: int, window: int) -> Hit:
    """A `limits` strategy's hit (ImportError when limits is not installed)."""
    import limits
    import limits.storage
    import limits.strategies

    strategy = getattr(limits.strategies, LIMITS_STRATEGIES[name])(limits.storage.RedisStorage(url))
    item = limits.RateLimitItemPerSecond(limit, window)
    return lambda key: bool(strategy.hit(item, key))


def pyrate_hitter(client: redis.Redis, limit: int, window: int) -> Hit:
    """pyrate-limiter's Redis bucket, one limiter per key (ImportError when not installed)."""
    import pyrate_limiter as pyrate

    rate = pyrate.Rate(limit, pyrate.Duration.SECOND * window)
    limiters: dict[str, Any] = {}

    def hit(key: str) -> bool:
        limiter = limiters.get(key)
        if limiter is None:
            bucket = pyrate.RedisBucket.init([rate], client, f"pyrate:{key}")
            limiter = limiters.setdefault(key, pyrate.Limiter(bucket))
        return bool(limiter.try_acquire(key, blocking=True, timeout=0.05))

    return hit


def peers(url: str, client: redis.Redis, limit: int, window: int) -> dict[str, Hit]:
    found: dict[str, Hit] = {}
    try:
        for label in LIMITS_STRATEGIES:
            found[label] = limits_hitter(url, label, limit, window)
    except ImportError:
        print("(limits not installed: skipped)")
    try:
        found["pyrate-limiter (Redis log)"] = pyrate_hitter(client, limit, window)
    except ImportError:
        print("(pyrate-limiter not installed: skipped)")
    return found


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import logging

    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def throughput(hit: Hit, n: int) -> float:
    key = f"tp:{uuid.uuid4().hex}"
    hit(key)
    started = time.perf_counter()
    for _ in range(n):
        hit(key)
    return n / (time.perf_counter() - started)


def commands_per_hit(hit: Hit, port: int) -> str:
    key = f"cmd:{uuid.uuid4().hex}"
    hit(key)
    hit(key)
    with CommandCounter([("127.0.0.1", port)]) as seen:
        hit(key)
    names = seen.names
    return f"{len(names)} ({' '.join(names)})"


def admitted_under_threads(hit: Hit, threads: int = 16, each: int = 50) -> int:
    key = f"ex:{uuid.uuid4().hex}"
    hit(key)  # warm-up: counts as one admitted hit
    admitted = [1]
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            if hit(key):
                with lock:
                    admitted.append(1)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return len(admitted)


def memory(client: redis.Redis, port: int) -> list[tuple[str, int, int]]:
    """MEMORY USAGE of one key after 1 and after 100 hits (limit 100, 60 s window)."""
    rows = []
    made: dict[str, RateLimiter] = {
        "FixedWindow": FixedWindow(client, 100, 60),
        "SlidingLog": SlidingLog(client, 100, 60),
        "SlidingWindow": SlidingWindow(client, 100, 60),
        "TokenBucket": TokenBucket(client, 100, 100 / 60),
        "GCRA": GCRA(client, 100, 60),
    }
    for name, limiter in made.items():
        key = f"mem:{uuid.uuid4().hex}"
        limiter.hit(key)
        (redis_key,) = limiter.keys(key)
        one = int(client.memory_usage(redis_key, samples=0) or 0)
        for _ in range(99):
            limiter.hit(key)
        rows.append((name, one, int(client.memory_usage(redis_key, samples=0) or 0)))
    # the seed's recipes: INCR on a per-minute key; a ZSET of request ids
    fixed = "rate_limit:user123:2024-01-15T10:30"
    client.delete(fixed)
    client.incr(fixed)
    client.expire(fixed, 60)
    one = int(client.memory_usage(fixed, samples=0) or 0)
    client.incrby(fixed, 99)
    rows.append(("seed fixed window (INCR)", one, int(client.memory_usage(fixed, samples=0) or 0)))
    log = "rate_limit:user123"
    client.delete(log)
    now = int(time.time() * 1000)
    client.zadd(log, {uuid.uuid4().hex: now})
    one = int(client.memory_usage(log, samples=0) or 0)
    client.zadd(log, {uuid.uuid4().hex: now + i for i in range(1, 100)})
    rows.append(("seed sliding log (ZSET)", one, int(client.memory_usage(log, samples=0) or 0)))
    client.delete(fixed, log)
    return rows


def _print_memory(client: redis.Redis, port: int) -> None:
    print("| limiter (limit 100 / 60 s) | bytes after 1 hit | bytes after 100 hits |")
    print("|---|---:|---:|")
    for name, one, hundred in memory(client, port):
        print(f"| {name} | {one} | {hundred} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server to use (default: an embedded Valkey)")
    parser.add_argument("-n", type=int, default=2000, help="sequential hits per limiter")
    parser.add_argument("--memory-only", action="store_true", help="only the memory table")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
    client = redis.Redis.from_url(url)
    port = int(client.connection_pool.connection_kwargs["port"])
    info = client.info("server")
    version = info.get("valkey_version") or info.get("redis_version")
    try:
        if args.memory_only:
            _print_memory(client, port)
            return
        print(f"server {info.get('server_name', 'redis')} {version} at {url}\n")
        with quiet():
            fast = {**ours(client, 10**9, DAY), **peers(url, client, 10**9, DAY)}
            exact = {**ours(client, 100, DAY), **peers(url, client, 100, DAY)}
            head = "| limiter | hits/s (1 thread) | commands per hit | admitted (16x50, lim 100) |"
            print(head)
            print("|---|---:|---|---:|")
            # interleaved rounds, best of 5: the machine's load drifts during a run
            best = dict.fromkeys(fast, 0.0)
            for _round in range(5):
                for name in fast:
                    best[name] = max(best[name], throughput(fast[name], args.n // 5))
            for name in fast:
                rate = best[name]
                commands = commands_per_hit(fast[name], port)
                admitted = admitted_under_threads(exact[name])
                print(f"| {name} | {rate:,.0f} | {commands} | {admitted} |")
        print()
        _print_memory(client, port)
    finally:
        client.close()
        if server is not None:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    main()
