"""Stampede protection on real servers: one loader per key across threads, tasks and processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redis_patterns import AsyncCache, Cache, LockTimeoutError
from redis_patterns.testing.pytest_plugin import Backend

WORKER = Path(__file__).with_name("cache_worker.py")
LOADER_SECONDS = 0.2


def _run_threads(n: int, target: Callable[[int], None], timeout: float = 60) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("stampede", ["lock", "xfetch"])
def test_fifty_threads_one_cache_cold_key_loads_once(
    backend: Backend, prefix: str, stampede: Any, scale: Callable[[int, int], int]
) -> None:
    cache = Cache(backend.client(), prefix, 60, stampede=stampede)
    for round_ in range(scale(2, 20)):  # each round: the key is cold again
        cache.delete("hot")
        _one_cold_round(cache, f"v{round_}", scale(50, 200))  # scenario 16: 200 readers


def _one_cold_round(cache: Cache, produced: str, readers: int) -> None:
    calls: list[int] = []
    results: list[Any] = [None] * readers
    barrier = threading.Barrier(readers)

    def loader() -> str:
        calls.append(1)
        time.sleep(LOADER_SECONDS)
        return produced

    def reader(i: int) -> None:
        barrier.wait()
        results[i] = cache.get_or_load("hot", loader)

    _run_threads(readers, reader)
    assert len(calls) == 1
    assert results == [produced] * readers


def test_fifty_threads_fifty_caches_cross_process_lock(backend: Backend, prefix: str) -> None:
    """Each thread has its own Cache and client: only the Redis lock can keep it to one load."""
    caches = [Cache(backend.client(), prefix, 60, lock_ttl=5) for _ in range(50)]
    calls: list[int] = []
    results: list[Any] = [None] * 50
    barrier = threading.Barrier(50)

    def loader() -> str:
        calls.append(1)
        time.sleep(LOADER_SECONDS)
        return "value"

    def reader(i: int) -> None:
        barrier.wait()
        results[i] = caches[i].get_or_load("hot", loader)

    _run_threads(50, reader)
    assert len(calls) == 1
    assert results == ["value"] * 50


def test_without_protection_every_cache_loads(backend: Backend, prefix: str) -> None:
    """The control: stampede=None still single-flights within one Cache, not across them."""
    caches = [Cache(backend.client(), prefix, 60, stampede=None) for _ in range(10)]
    calls: list[int] = []
    barrier = threading.Barrier(10)

    def loader() -> str:
        calls.append(1)
        time.sleep(LOADER_SECONDS)
        return "value"

    def reader(i: int) -> None:
        barrier.wait()
        caches[i].get_or_load("hot", loader)

    _run_threads(10, reader)
    assert len(calls) > 1


@pytest.mark.parametrize("shared", [True, False])
async def test_fifty_tasks_cold_key_loads_once(backend: Backend, prefix: str, shared: bool) -> None:
    client = backend.async_client()
    caches = [AsyncCache(client, prefix, 60) for _ in range(1 if shared else 5)]
    calls: list[int] = []

    async def loader() -> str:
        calls.append(1)
        await asyncio.sleep(LOADER_SECONDS)
        return "value"

    results = await asyncio.gather(
        *(caches[i % len(caches)].get_or_load("hot", loader) for i in range(50))
    )
    assert results == ["value"] * 50
    assert len(calls) == 1
    await client.aclose()


def _spawn_workers(
    backend: Backend,
    n: int,
    namespace: str,
    counter: str,
    go: str,
    *,
    seconds: float,
    lock_ttl: float,
) -> list[subprocess.Popen[str]]:
    kind = "cluster" if backend.is_cluster else "standalone"
    port = backend.nodes[0][1]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                kind,
                str(port),
                namespace,
                "hot",
                str(seconds),
                counter,
                go,
                str(lock_ttl),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    return procs


def test_four_processes_cold_key_loads_once(backend: Backend, prefix: str) -> None:
    client = backend.client()
    counter, go = f"{prefix}:calls", f"{prefix}:go"
    procs = _spawn_workers(backend, 4, prefix, counter, go, seconds=LOADER_SECONDS, lock_ttl=10)
    client.set(go, 1)
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4
    assert all("value loaded-by-" in out for out in outputs), outputs
    assert client.get(counter) == b"1"


def test_stale_value_is_served_at_once_while_one_refreshes(backend: Backend, prefix: str) -> None:
    caches = [Cache(backend.client(), prefix, 0.05, jitter=0, stale_ttl=60) for _ in range(5)]
    caches[0].set("hot", "old")
    time.sleep(0.1)  # past the soft expiry, well within the stale window
    release = threading.Event()
    calls: list[int] = []
    results: list[Any] = [None] * 50
    barrier = threading.Barrier(50)

    def loader() -> str:
        calls.append(1)
        assert release.wait(30)  # blocks until every caller has returned
        return "new"

    def reader(i: int) -> None:
        barrier.wait()
        results[i] = caches[i % 5].get_or_load("hot", loader)

    _run_threads(50, reader)  # returns although the loader is still blocked
    assert results == ["old"] * 50
    release.set()
    deadline = time.monotonic() + 30
    while caches[0].get("hot") != "new" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert caches[0].get("hot") == "new"
    assert len(calls) == 1


async def test_async_stale_value_is_served_at_once(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 0.05, jitter=0, stale_ttl=60)
    await cache.set("hot", "old")
    await asyncio.sleep(0.1)
    release = asyncio.Event()
    calls: list[int] = []

    async def loader() -> str:
        calls.append(1)
        await asyncio.wait_for(release.wait(), 30)
        return "new"

    results = await asyncio.gather(*(cache.get_or_load("hot", loader) for _ in range(50)))
    assert results == ["old"] * 50
    release.set()
    for _ in range(3000):
        if await cache.get("hot") == "new":
            break
        await asyncio.sleep(0.01)
    assert await cache.get("hot") == "new"
    assert len(calls) == 1
    await client.aclose()


@pytest.mark.fault
def test_serve_stale_on_error_and_back_off(backend: Backend, prefix: str) -> None:
    """Scenario 18: the store fails; stale values stay, at most one call per backoff."""
    client = backend.client()
    cache = Cache(client, prefix, 0.05, jitter=0, stale_ttl=60, error_backoff=30)
    cache.set("hot", "old")
    time.sleep(0.1)
    failed = threading.Event()
    calls: list[int] = []

    def broken() -> str:
        calls.append(1)
        failed.set()
        raise RuntimeError("db down")

    assert cache.get_or_load("hot", broken) == "old"
    assert failed.wait(30)
    for _ in range(20):  # within the backoff nobody calls the failing store again
        assert cache.get_or_load("hot", broken) == "old"
    assert len(calls) == 1
    assert client.exists(cache.key_of("hot"))  # the stale value was never deleted
    # Recovery: once the backoff lock is gone, the next caller refreshes.
    client.delete(cache._core.lock_key(cache.key_of("hot")))
    cache.get_or_load("hot", lambda: "new")
    deadline = time.monotonic() + 30
    while cache.get("hot") != "new" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("hot") == "new"


def _waiters_recover(caches: list[Cache]) -> float:
    """Eight waiters on a key whose loader died: returns when the one new load started."""
    started: list[float] = []
    results: list[Any] = [None] * len(caches)

    def loader() -> str:
        started.append(time.monotonic())
        return "recovered"

    def waiter(i: int) -> None:
        results[i] = caches[i].get_or_load("hot", loader)

    _run_threads(len(caches), waiter)
    assert results == ["recovered"] * len(caches)
    assert len(started) == 1
    return started[0]


@pytest.mark.fault
def test_recompute_holder_killed(
    backend: Backend, prefix: str, scale: Callable[[int, int], int]
) -> None:
    """Scenario 17: SIGKILL the process holding the recompute lock; a new load starts within
    the lock ttl, exactly one, and waiters get the value (or a typed timeout)."""
    client = backend.client()
    lock_ttl = 1.0
    delays = []
    for round_ in range(scale(1, 5)):
        counter, go = f"{prefix}:calls{round_}", f"{prefix}:go{round_}"
        namespace = f"{prefix}r{round_}"
        (victim,) = _spawn_workers(
            backend, 1, namespace, counter, go, seconds=60, lock_ttl=lock_ttl
        )
        client.set(go, 1)
        cache = Cache(client, namespace, 60, lock_ttl=lock_ttl)
        lock = cache._core.lock_key(cache.key_of("hot"))
        deadline = time.monotonic() + 30
        while not (client.exists(lock) and client.get(counter)) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert client.exists(lock)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(timeout=30)
        assert victim.stdout is not None
        victim.stdout.close()
        impatient = Cache(client, namespace, 60, lock_ttl=lock_ttl, wait_timeout=0.2)
        with pytest.raises(LockTimeoutError):
            impatient.get_or_load("hot", lambda: "impatient")
        caches = [Cache(backend.client(), namespace, 60, lock_ttl=lock_ttl) for _ in range(8)]
        delays.append(_waiters_recover(caches) - killed)
    # The lock's PX bounds the takeover (the waiters poll every <= 100 ms); generous margin for
    # a loaded machine: this checks that recovery is bounded by the ttl, not its speed.
    print(f"takeover after holder death: {[round(d, 3) for d in delays]} s (lock ttl {lock_ttl})")
    assert max(delays) < lock_ttl + 2.0


@pytest.mark.parametrize("stampede", ["xfetch", "lock"])
def test_steady_reads_across_expiry_never_miss(
    backend: Backend, prefix: str, stampede: Any, scale: Callable[[int, int], int]
) -> None:
    """Scenario 16 (xfetch): a hot key read steadily through several expiries: after the first
    load no caller ever waits for a loader, every refresh lands before the hard expiry, and
    at most 2 loads happen per expiry."""
    # XFetch refreshes about beta * delta * ln(read rate * delta) before expiry, so the ttl must
    # be long against the 20 ms loader for "<= 2 loads per expiry" to be the right yardstick.
    ttl = 1.0
    cache = Cache(backend.client(), prefix, ttl, stampede=stampede, jitter=0, stale_ttl=5)
    loads: list[float] = []

    def loader() -> float:
        time.sleep(0.02)
        loads.append(time.monotonic())
        return time.monotonic()

    cache.get_or_load("hot", loader)
    duration = ttl * scale(3, 100)
    stop = time.monotonic() + duration
    lags: list[float] = []

    def reader(_: int) -> None:
        while time.monotonic() < stop:
            value = cache.get_or_load("hot", loader)
            lags.append(time.monotonic() - value)

    _run_threads(4, reader, timeout=duration + 60)
    stats = cache.stats
    periods = duration / ttl
    print(f"{stampede}: {stats} over {periods:.0f} ttl periods, max value age {max(lags):.3f}s")
    assert stats["misses"] == 1  # only the very first, cold read loaded in the foreground
    assert stats["refreshes"] >= periods // 2
    assert len(loads) <= 2 * periods + 2
    if stampede == "xfetch":
        # Most refreshes start before the soft expiry: early, by the Vattani et al. rule.
        assert stats["early_refreshes"] >= stats["refreshes"] // 2
    else:
        assert stats["early_refreshes"] == 0


@pytest.mark.fault
async def test_async_serve_stale_on_error_and_back_off(backend: Backend, prefix: str) -> None:
    """Scenario 18 on the asyncio API: same outcome as the sync test."""
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 0.05, jitter=0, stale_ttl=60, error_backoff=30)
    await cache.set("hot", "old")
    await asyncio.sleep(0.1)
    calls: list[int] = []
    failed = asyncio.Event()

    async def broken() -> str:
        calls.append(1)
        failed.set()
        raise RuntimeError("db down")

    assert await cache.get_or_load("hot", broken) == "old"
    await asyncio.wait_for(failed.wait(), 30)
    results = await asyncio.gather(*(cache.get_or_load("hot", broken) for _ in range(20)))
    assert results == ["old"] * 20
    lock = cache._core.lock_key(cache.key_of("hot"))
    for _ in range(1000):  # the failed refresh keeps the lock for the 30 s backoff
        if await client.pttl(lock) > 10_000:
            break
        await asyncio.sleep(0.01)
    assert await client.pttl(lock) > 10_000
    assert len(calls) == 1
    assert cache.stats["load_errors"] == 1
    assert await client.exists(cache.key_of("hot")) == 1
    await client.aclose()


async def test_cancelled_loader_releases_the_lock(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60, lock_ttl=30)
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    task = asyncio.ensure_future(cache.get_or_load("k", slow))
    await asyncio.wait_for(started.wait(), 30)
    assert await client.exists(cache._core.lock_key(cache.key_of("k"))) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Released at once (not left for its 30 s ttl): the next caller loads immediately.
    assert await client.exists(cache._core.lock_key(cache.key_of("k"))) == 0

    async def quick() -> str:
        return "loaded"

    assert await cache.get_or_load("k", quick) == "loaded"
    await client.aclose()


async def test_cancelled_leader_hands_the_load_to_a_waiting_task(
    backend: Backend, prefix: str
) -> None:
    """Tasks waiting on a leader that is cancelled try again: one of them loads, once, and
    all of them get its value (the single-flight lives in the plan now)."""
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60, lock_ttl=30)
    started = asyncio.Event()
    calls: list[str] = []

    async def slow() -> str:
        calls.append("slow")
        started.set()
        await asyncio.sleep(60)
        return "never"

    async def quick() -> str:
        calls.append("quick")
        return "value"

    leader = asyncio.ensure_future(cache.get_or_load("k", slow))
    await asyncio.wait_for(started.wait(), 30)
    followers = [asyncio.ensure_future(cache.get_or_load("k", quick)) for _ in range(5)]
    await asyncio.sleep(0.05)  # the followers are waiting on the leader's flight
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.wait_for(asyncio.gather(*followers), 30) == ["value"] * 5
    assert calls == ["slow", "quick"]
    await client.aclose()
