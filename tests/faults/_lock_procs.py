"""Processes for the lock fault tests: contention workers, and a holder driven over stdin.

Run as a script (``async`` as the last argument for AsyncLock), it is a lock holder that obeys
one command per line on stdin and answers one line on stdout, so a test can SIGSTOP / SIGCONT /
SIGKILL it between commands:

    acquire            -> "fence <n>"        (Lock with auto_renew=True)
    write <f> <v>      -> "ok" | "stale"     (FencedStore write with the held fence)
    waitlost           -> "lost True|False"  (waits up to 10 s for the watchdog to notice)
    release            -> "released" | "notowned"
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from redis_patterns import (
    AsyncFencedStore,
    AsyncLock,
    FencedStore,
    Lock,
    LockNotOwnedError,
    StaleFenceError,
)

Spec = tuple[str, str, int]  # (kind, host, port); kind is "cluster" or "standalone"


def make_client(spec: Spec) -> Any:
    kind, host, port = spec
    if kind == "cluster":
        return redis.cluster.RedisCluster(host=host, port=port)
    return redis.Redis(host=host, port=port)


def make_async_client(spec: Spec) -> Any:
    kind, host, port = spec
    if kind == "cluster":
        return redis.asyncio.cluster.RedisCluster(host=host, port=port)
    return redis.asyncio.Redis(host=host, port=port)


def contend_async(spec: Spec, name: str, counter_key: str, rounds: int) -> list[tuple[int, int]]:
    """`contend` through AsyncLock, in sequential critical sections of one event loop."""

    async def run() -> list[tuple[int, int]]:
        client = make_async_client(spec)
        seen: list[tuple[int, int]] = []
        for _ in range(rounds):
            lock = AsyncLock(client, name, ttl=10, timeout=120)
            async with lock:
                value = int(await client.get(counter_key) or 0)
                await client.set(counter_key, value + 1)
                assert lock.fence is not None
                seen.append((value, lock.fence))
        await client.aclose()
        return seen

    return asyncio.run(run())


def contend(spec: Spec, name: str, counter_key: str, rounds: int) -> list[tuple[int, int]]:
    """``rounds`` critical sections doing a racy GET/SET increment; returns (read, fence) pairs."""
    client = make_client(spec)
    seen: list[tuple[int, int]] = []
    for _ in range(rounds):
        lock = Lock(client, name, ttl=10, timeout=120)
        with lock:
            value = int(client.get(counter_key) or 0)
            client.set(counter_key, value + 1)
            assert lock.fence is not None
            seen.append((value, lock.fence))
    client.close()
    return seen


def holder(spec: Spec, name: str, ttl: float) -> None:
    client = make_client(spec)
    store = FencedStore(client, name)
    lock: Lock | None = None
    for line in sys.stdin:
        command, *args = line.split()
        if command == "acquire":
            lock = Lock(client, name, ttl=ttl, auto_renew=True)
            assert lock.acquire(timeout=30)
            answer = f"fence {lock.fence}"
        elif command == "write":
            assert lock is not None
            assert lock.fence is not None
            try:
                store.write(lock.fence, args[0], args[1])
                answer = "ok"
            except StaleFenceError:
                answer = "stale"
        elif command == "waitlost":
            assert lock is not None
            deadline = time.monotonic() + 10
            while not lock.lost and time.monotonic() < deadline:
                time.sleep(0.005)
            answer = f"lost {lock.lost}"
        elif command == "release":
            assert lock is not None
            try:
                lock.release()
                answer = "released"
            except LockNotOwnedError:
                answer = "notowned"
        else:
            answer = f"unknown {command}"
        print(answer, flush=True)


def _setter(event: asyncio.Event) -> Any:
    return lambda _lock: event.set()


async def async_holder(spec: Spec, name: str, ttl: float) -> None:
    """`holder` with AsyncLock: the watchdog is a task of this loop, stdin read off-loop."""
    client = make_async_client(spec)
    store = AsyncFencedStore(client, name)
    lock: AsyncLock | None = None
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, *args = line.split()
        if command == "acquire":
            lost = asyncio.Event()
            lock = AsyncLock(client, name, ttl=ttl, auto_renew=True, on_lost=_setter(lost))
            assert await lock.acquire(timeout=30)
            answer = f"fence {lock.fence}"
        elif command == "write":
            assert lock is not None
            assert lock.fence is not None
            try:
                await store.write(lock.fence, args[0], args[1])
                answer = "ok"
            except StaleFenceError:
                answer = "stale"
        elif command == "waitlost":
            assert lock is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lost.wait(), 10)
            answer = f"lost {lock.lost}"
        elif command == "release":
            assert lock is not None
            try:
                await lock.release()
                answer = "released"
            except LockNotOwnedError:
                answer = "notowned"
        else:
            answer = f"unknown {command}"
        print(answer, flush=True)
    await client.aclose()


if __name__ == "__main__":
    spec_ = (sys.argv[1], sys.argv[2], int(sys.argv[3]))
    if sys.argv[6:] == ["async"]:
        asyncio.run(async_holder(spec_, sys.argv[4], float(sys.argv[5])))
    else:
        holder(spec_, sys.argv[4], float(sys.argv[5]))
