"""The near cache (local=N): zero-command hits, invalidation across processes, bounded delay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from redis_patterns import AsyncCache, Cache
from redis_patterns._core.cache_near import NearCache
from redis_patterns.testing.pytest_plugin import Backend


def _wait_ready(cache: Cache) -> None:
    deadline = time.monotonic() + 30
    while not cache.local_ready and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cache.local_ready


async def _await_ready(cache: AsyncCache) -> None:
    for _ in range(3000):
        if cache.local_ready:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the near cache's subscription never came up")


def test_near_hit_sends_zero_commands(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60, local=100)
    cache.set("k", {"v": 1})
    _wait_ready(cache)
    assert cache.get("k") == {"v": 1}  # from Redis, now kept locally
    with backend.counter() as seen:
        for _ in range(100):
            assert cache.get("k") == {"v": 1}
            assert cache.get_or_load("k", lambda: {"v": 2}) == {"v": 1}
    assert seen.count == 0
    assert cache.stats["near_hits"] >= 200
    cache.close()


def test_near_hits_are_copies(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60, local=10)
    cache.set("k", [1])
    _wait_ready(cache)
    cache.get("k")
    first = cache.get("k")
    first.append(2)  # mutating a returned value must not change the cache
    assert cache.get("k") == [1]
    cache.close()


def test_lru_evicts_beyond_size(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60, local=3)
    _wait_ready_after_first_op = cache.get("warm")
    assert _wait_ready_after_first_op is None
    _wait_ready(cache)
    for i in range(5):
        cache.set(f"k{i}", i)
        cache.get(f"k{i}")
    assert cache.stats["near_size"] == 3
    cache.close()


@pytest.mark.parametrize("operation", ["delete", "set"])
def test_write_in_a_invalidates_b_within_a_bounded_delay(
    backend: Backend, prefix: str, operation: str
) -> None:
    """A and B are separate Cache objects with their own connections and subscriptions, as two
    processes would have. After A's write returns, A never serves the old value; B stops once
    the invalidation arrives, and the delay is measured."""
    a = Cache(backend.client(), prefix, 60, local=100)
    b = Cache(backend.client(), prefix, 60, local=100)
    a.set("k", "old")
    b.get("k")  # the subscription starts with a cache's first operation
    _wait_ready(a)
    _wait_ready(b)
    assert a.get("k") == "old"
    assert b.get("k") == "old"
    assert b.get("k") == "old"
    assert b.stats["near_hits"] >= 1
    invalidations = b.stats["invalidations"]
    if operation == "delete":
        a.delete("k")
    else:
        a.set("k", "new")
    done = time.monotonic()
    assert a.get("k") != "old"  # never, not even once
    deadline = done + 10
    while time.monotonic() < deadline:
        arrived = b.stats["invalidations"] > invalidations
        if b.get("k") != "old":
            break
        assert not arrived  # once the invalidation has arrived B never serves "old"
        time.sleep(0.0005)
    delay = time.monotonic() - done
    assert b.get("k") == (None if operation == "delete" else "new")
    print(f"near-cache invalidation delay A->B ({operation}): {delay * 1000:.2f} ms")
    assert delay < 5.0  # bounded (loopback: ~1 ms); generous for a loaded machine
    a.close()
    b.close()


@pytest.mark.fault
def test_lost_subscription_disables_then_restores_the_near_cache(
    backend: Backend, prefix: str
) -> None:
    """Pub/sub is at most once: while the subscription is down messages may be lost, so the
    near cache is emptied and bypassed until it is back."""
    client = backend.client()
    cache = Cache(client, prefix, 60, local=100)
    cache.set("k", 1)
    _wait_ready(cache)
    cache.get("k")
    assert cache.stats["near_size"] == 1
    for node in backend.servers:
        with node.client() as admin:
            admin.client_kill_filter(_type="pubsub")
    deadline = time.monotonic() + 30
    while cache.stats["near_size"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cache.stats["near_size"] == 0
    _wait_ready(cache)  # resubscribed by itself
    cache.get("k")
    assert cache.stats["near_size"] == 1
    cache.close()


def test_near_cache_drops_a_read_that_raced_an_invalidation() -> None:
    near = NearCache(10, 60)
    near.set_healthy(True)
    generation = near.generation  # a read starts
    near.invalidate(b"k")  # the invalidation arrives before the read's reply
    near.put(b"k", b"old", 10, generation)
    assert near.get(b"k") is None
    near.put(b"k", b"new", 10, near.generation)
    assert near.get(b"k") == b"new"
    near.set_healthy(False)
    assert near.get(b"k") is None


def test_near_cache_expires_entries() -> None:
    now = [0.0]
    near = NearCache(10, 5, clock=lambda: now[0])
    near.set_healthy(True)
    near.put(b"k", b"v", 100, near.generation)  # capped at max_age 5
    now[0] = 4.9
    assert near.get(b"k") == b"v"
    now[0] = 5.0
    assert near.get(b"k") is None


async def test_async_near_cache_zero_commands_and_invalidation(
    backend: Backend, prefix: str
) -> None:
    client_a, client_b = backend.async_client(), backend.async_client()
    a = AsyncCache(client_a, prefix, 60, local=100)
    b = AsyncCache(client_b, prefix, 60, local=100)
    await a.set("k", "old")
    await b.get("k")
    await _await_ready(a)
    await _await_ready(b)
    await b.get("k")
    with backend.counter() as seen:
        assert await b.get("k") == "old"
    assert seen.count == 0
    await a.delete("k")
    assert await a.get("k") is None
    for _ in range(3000):
        if await b.get("k") is None:
            break
        await asyncio.sleep(0.001)
    assert await b.get("k") is None
    await a.aclose()
    await b.aclose()
    await client_a.aclose()
    await client_b.aclose()


def test_delete_in_a_reaches_process_b(backend: Backend, prefix: str) -> None:
    """A real second process: after A's delete returns, A never serves the old value and B
    stops within a bounded, measured delay (CLOCK_MONOTONIC is system-wide)."""
    a = Cache(backend.client(), prefix, 60, local=100)
    a.set("k", "old")
    kind = "cluster" if backend.is_cluster else "standalone"
    worker = Path(__file__).with_name("near_worker.py")
    proc = subprocess.Popen(
        [sys.executable, str(worker), kind, str(backend.nodes[0][1]), prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    a.delete("k")
    done = time.monotonic()
    assert a.get("k") is None
    line = proc.stdout.readline().split()
    assert proc.wait(timeout=30) == 0
    proc.stdout.close()
    assert line[0] == "changed"
    delay, violations = float(line[1]) - done, int(line[2])
    print(f"near-cache invalidation delay A->B across processes: {delay * 1000:.2f} ms")
    assert violations == 0
    assert delay < 5.0  # bounded; ~1 ms on loopback
    a.close()
