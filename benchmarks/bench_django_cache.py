"""Django cache backends, one server: RedisPatternsCache vs django-redis vs Django's RedisCache.

Run: ``python benchmarks/bench_django_cache.py [--url redis://...] [--ops 5000]`` (embedded
server by default). django-redis is optional (``pip install django-redis``, in the bench venv
only: ``make bench-peers``); a missing peer is reported as such. Every backend uses the same
server over loopback, one caller at a time, pickle serialization (each backend's default) and
the same value, so the numbers are per-operation latency turned into ops/s (best of three
round-robin rounds). ``get_many`` asks for 10 keys. Not run by pytest.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

import django
import redis
from django.conf import settings

import redis_patterns

VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "score": 9.5}
KEYS = [f"many{i}" for i in range(10)]


def _rate(ops: int, op: Callable[[], Any]) -> float:
    for _ in range(min(200, ops)):
        op()
    started = time.perf_counter()
    for _ in range(ops):
        op()
    return ops / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="server URL (default: REDIS_URL or embedded)")
    parser.add_argument("--ops", type=int, default=5000, help="operations per measurement")
    args = parser.parse_args()
    url = args.url
    if url is None:
        probe = redis_patterns.connect()
        kwargs = probe.connection_pool.connection_kwargs
        url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/0"
        probe.close()
    backends: dict[str, dict[str, Any]] = {
        "redis-patterns RedisPatternsCache": {
            "BACKEND": "redis_patterns.integrations.django.cache.RedisPatternsCache",
            "LOCATION": url,
            "KEY_PREFIX": "rp",
        },
        "redis-patterns RedisPatternsCache(LOCAL=1000)": {
            "BACKEND": "redis_patterns.integrations.django.cache.RedisPatternsCache",
            "LOCATION": url,
            "KEY_PREFIX": "rpl",
            "OPTIONS": {"LOCAL": 1000, "NAMESPACE": "near"},
        },
        "Django RedisCache (built in)": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "dj",
        },
    }
    try:
        importlib.import_module("django_redis")
    except ImportError:
        missing = True
    else:
        missing = False
        backends["django-redis"] = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "djr",
        }
    settings.configure(SECRET_KEY="benchmark", CACHES={"default": {}, **backends})
    django.setup()
    from django.core.cache import caches

    ops: dict[str, Callable[[Any], Any]] = {
        "get hit": lambda c: c.get("hit"),
        "get miss": lambda c: c.get("nope"),
        "set": lambda c: c.set("w", VALUE, 600),
        "get_many (10 keys)": lambda c: c.get_many(KEYS),
    }
    for name in backends:
        cache = caches[name]
        cache.set("hit", VALUE, 600)
        cache.set_many(dict.fromkeys(KEYS, VALUE), 600)
        if "LOCAL" in name:
            cache.get("hit")
            time.sleep(0.2)  # the near cache's subscription comes up
    # Round robin, best of three: on a shared machine the load changes during a run, and the
    # backend measured last would otherwise be favoured or penalised by it.
    best: dict[tuple[str, str], float] = {}
    server: dict[tuple[str, str], float] = {}
    stats = redis.Redis.from_url(url)
    for _ in range(3):
        for operation, op in ops.items():
            for name in backends:
                stats.config_resetstat()
                rate = _rate(args.ops, functools.partial(op, caches[name]))
                used = sum(v["usec"] for v in stats.info("commandstats").values())
                best[name, operation] = max(best.get((name, operation), 0.0), rate)
                calls = args.ops + min(200, args.ops)
                server[name, operation] = min(server.get((name, operation), 1e9), used / calls)
    rows: list[tuple[str, str, float | str, float]] = [
        (name, operation, best[name, operation], server[name, operation])
        for name in backends
        for operation in ops
    ]
    if missing:
        rows.append(("django-redis", "-", "not installed", 0.0))
    print(f"{args.ops} sequential operations each, one process, server {url}")
    print("(server µs: the server's own time per operation, from INFO commandstats)\n")
    print("| backend | operation | ops/s | server µs |")
    print("|---|---|---:|---:|")
    for backend, operation, measured, micros in rows:
        shown = f"{measured:,.0f}" if isinstance(measured, float) else measured
        print(f"| {backend} | {operation} | {shown} | {micros:.1f} |")


if __name__ == "__main__":
    main()
