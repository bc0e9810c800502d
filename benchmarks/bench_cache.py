"""Cache hit / miss throughput: redis-patterns vs cashews, dogpile.cache and aiocache, one server.

Run: ``python benchmarks/bench_cache.py [--url redis://...] [--ops 5000]`` (embedded server by
default). The peers are optional (``pip install cashews dogpile.cache aiocache``); a missing one
is reported as such. Every library talks to the same server over loopback with one client and
one caller at a time, so the numbers are per-operation latency turned into ops/s; the value is a
small JSON-able dict. Not run by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis_patterns
from redis_patterns import AsyncCache, Cache

VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "score": 9.5}
Row = tuple[str, str, str, float | str]


def _sync_rate(ops: int, op: Callable[[], Any]) -> float:
    for _ in range(min(200, ops)):
        op()
    started = time.perf_counter()
    for _ in range(ops):
        op()
    return ops / (time.perf_counter() - started)


async def _async_rate(ops: int, op: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(min(200, ops)):
        await op()
    started = time.perf_counter()
    for _ in range(ops):
        await op()
    return ops / (time.perf_counter() - started)


def bench_sync(url: str, ops: int) -> list[Row]:
    rows: list[Row] = []
    client = redis_patterns.connect(url)
    cache = Cache(client, "bench.rp", 600)
    cache.set("hit", VALUE)
    rows.append(
        ("redis-patterns Cache", "sync", "get hit", _sync_rate(ops, lambda: cache.get("hit")))
    )
    rows.append(
        (
            "redis-patterns Cache",
            "sync",
            "get_or_load hit",
            _sync_rate(ops, lambda: cache.get_or_load("hit", lambda: VALUE)),
        )
    )
    rows.append(
        ("redis-patterns Cache", "sync", "get miss", _sync_rate(ops, lambda: cache.get("nope")))
    )
    near = Cache(client, "bench.rp", 600, local=1000)
    near.get("hit")
    deadline = time.monotonic() + 5
    while not near.local_ready and time.monotonic() < deadline:
        time.sleep(0.01)
    near.get("hit")
    rows.append(
        (
            "redis-patterns Cache(local=1000)",
            "sync",
            "get hit (near)",
            _sync_rate(ops, lambda: near.get("hit")),
        )
    )
    near.close()
    try:
        dogpile = importlib.import_module("dogpile.cache")
    except ImportError:
        rows.append(("dogpile.cache", "sync", "-", "not installed"))
    else:
        region = dogpile.make_region().configure(
            "dogpile.cache.redis", expiration_time=600, arguments={"url": url}
        )
        region.set("hit", VALUE)
        rows.append(
            ("dogpile.cache (redis)", "sync", "get hit", _sync_rate(ops, lambda: region.get("hit")))
        )
        rows.append(
            (
                "dogpile.cache (redis)",
                "sync",
                "get_or_create hit",
                _sync_rate(ops, lambda: region.get_or_create("hit", lambda: VALUE)),
            )
        )
        rows.append(
            (
                "dogpile.cache (redis)",
                "sync",
                "get miss",
                _sync_rate(ops, lambda: region.get("nope")),
            )
        )
    client.close()
    return rows


async def bench_async(url: str, ops: int) -> list[Row]:
    rows: list[Row] = []
    client = redis_patterns.connect(url, asyncio=True)
    cache = AsyncCache(client, "bench.rpa", 600)
    await cache.set("hit", VALUE)

    async def loader() -> dict[str, Any]:
        return VALUE

    rows.append(
        (
            "redis-patterns AsyncCache",
            "async",
            "get hit",
            await _async_rate(ops, lambda: cache.get("hit")),
        )
    )
    rows.append(
        (
            "redis-patterns AsyncCache",
            "async",
            "get_or_load hit",
            await _async_rate(ops, lambda: cache.get_or_load("hit", loader)),
        )
    )
    rows.append(
        (
            "redis-patterns AsyncCache",
            "async",
            "get miss",
            await _async_rate(ops, lambda: cache.get("nope")),
        )
    )
    async with AsyncCache(client, "bench.rpa", 600, local=1000) as near:
        await near.get("hit")
        for _ in range(500):
            if near.local_ready:
                break
            await asyncio.sleep(0.01)
        await near.get("hit")
        rows.append(
            (
                "redis-patterns AsyncCache(local=1000)",
                "async",
                "get hit (near)",
                await _async_rate(ops, lambda: near.get("hit")),
            )
        )
    await client.aclose()
    try:
        cashews = importlib.import_module("cashews")
    except ImportError:
        rows.append(("cashews", "async", "-", "not installed"))
    else:
        cc = cashews.Cache()
        cc.setup(url)
        await cc.set("bench:cashews:hit", VALUE, expire=600)
        rows.append(
            (
                "cashews (redis)",
                "async",
                "get hit",
                await _async_rate(ops, lambda: cc.get("bench:cashews:hit")),
            )
        )
        rows.append(
            (
                "cashews (redis)",
                "async",
                "get miss",
                await _async_rate(ops, lambda: cc.get("bench:cashews:nope")),
            )
        )
        await cc.close()
    try:
        aiocache = importlib.import_module("aiocache")
        serializers = importlib.import_module("aiocache.serializers")
    except ImportError:
        rows.append(("aiocache", "async", "-", "not installed"))
    else:
        from urllib.parse import urlparse

        parsed = urlparse(url)
        ac = aiocache.RedisCache(
            endpoint=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            namespace="bench.aiocache",
            serializer=serializers.JsonSerializer(),
        )
        await ac.set("hit", VALUE, ttl=600)
        rows.append(
            ("aiocache (redis)", "async", "get hit", await _async_rate(ops, lambda: ac.get("hit")))
        )
        rows.append(
            (
                "aiocache (redis)",
                "async",
                "get miss",
                await _async_rate(ops, lambda: ac.get("nope")),
            )
        )
        await ac.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="server URL (default: REDIS_URL or embedded)")
    parser.add_argument("--ops", type=int, default=5000, help="operations per measurement")
    args = parser.parse_args()
    url = args.url
    if url is None:
        probe = redis_patterns.connect()
        kwargs = probe.connection_pool.connection_kwargs
        url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"
        probe.close()
    rows = bench_sync(url, args.ops) + asyncio.run(bench_async(url, args.ops))
    print(f"{args.ops} sequential operations each, one client, server {url}\n")
    print("| library | api | operation | ops/s |")
    print("|---|---|---|---:|")
    for library, api, operation, rate in rows:
        shown = f"{rate:,.0f}" if isinstance(rate, float) else rate
        print(f"| {library} | {api} | {operation} | {shown} |")


if __name__ == "__main__":
    main()
