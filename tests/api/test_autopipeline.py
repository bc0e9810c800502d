"""Auto-pipelining of asyncio clients: concurrent calls in one turn go out as one write.

Counted on real servers: round trips as the request chunks a `FaultProxy` forwards, commands with
the MONITOR-based `CommandCounter`. A lone call is still exactly one command; NOSCRIPT re-sends
only the items that met it, as EVAL; a failed item fails only its task; a cancelled task leaves
the batch alone; limiter admits stay exact under 100 concurrent tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from redis_patterns import (
    AsyncBoundedCounter,
    AsyncCache,
    AsyncFixedWindow,
    AsyncGCRA,
    AsyncSlidingLog,
    AsyncSlidingWindow,
    AsyncTokenBucket,
    BackendError,
    EmbeddedServer,
    autopipeline,
    connect,
)
from redis_patterns._autopipeline import batcher_of
from redis_patterns._redis_steps import node_exchange
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.counter import CommandCounter
from redis_patterns.testing.pytest_plugin import Backend

DAY = 86400.0
N = 100


@pytest.fixture
async def proxied(
    valkey_server: EmbeddedServer,
) -> AsyncIterator[tuple[FaultProxy, redis.asyncio.Redis]]:
    """An asyncio client (batching on, the default) whose every write passes a proxy."""
    with FaultProxy(valkey_server) as proxy:
        client = connect(proxy.url, asyncio=True, max_connections=512)
        yield proxy, client
        await client.aclose()


def _counter(server: EmbeddedServer) -> CommandCounter:
    return CommandCounter([("127.0.0.1", server.port or 0)])


async def test_concurrent_hits_are_one_write(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy, client = proxied
    limiter = AsyncFixedWindow(client, N, DAY, name=prefix)
    await limiter.hit("warm")  # connection open, script cached
    before = proxy.stats.forwarded_requests
    with _counter(valkey_server) as seen:
        decisions = await asyncio.gather(*(limiter.hit(f"k{i}") for i in range(N)))
    assert proxy.stats.forwarded_requests - before == 1
    assert seen.names == ["EVALSHA"] * N
    assert all(d.allowed for d in decisions)


async def test_opted_out_client_sends_each_call_alone(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], prefix: str
) -> None:
    proxy, client = proxied
    autopipeline(client, False)
    limiter = AsyncFixedWindow(client, N, DAY, name=prefix)
    await asyncio.gather(*(limiter.hit("warm") for _ in range(10)))  # 10 connections open
    before = proxy.stats.forwarded_requests
    await asyncio.gather(*(limiter.hit("k") for _ in range(10)))
    assert proxy.stats.forwarded_requests - before == 10
    autopipeline(client, True)
    before = proxy.stats.forwarded_requests
    await asyncio.gather(*(limiter.hit("k") for _ in range(10)))
    assert proxy.stats.forwarded_requests - before == 1


async def test_a_lone_call_is_one_command(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy, client = proxied
    limiter = AsyncFixedWindow(client, N, DAY, name=prefix)
    await limiter.hit("warm")  # the script cached
    before = proxy.stats.forwarded_requests
    with _counter(valkey_server) as seen:
        assert (await limiter.hit("k")).allowed
    assert proxy.stats.forwarded_requests - before == 1
    assert seen.names == ["EVALSHA"]  # sent as it is, not as a pipeline of one


async def test_a_lone_cache_hit_is_its_own_two_commands_in_one_write(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy, client = proxied
    cache = AsyncCache(client, prefix)
    await cache.set("a", 1)
    before = proxy.stats.forwarded_requests
    with _counter(valkey_server) as seen:
        assert await cache.get("a") == 1
    assert proxy.stats.forwarded_requests - before == 1
    assert seen.names == ["MGET", "TIME"]  # the hit's own pipeline, through the batcher


async def test_a_lone_caller_waits_a_turn_only_when_another_task_could_join(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], prefix: str
) -> None:
    """With nothing else ready to run, no other task can add a command before the loop polls
    again: the caller sends at once. With something ready, it waits the turn (and is alone
    after it, here: the ready callback sends nothing)."""
    proxy, client = proxied
    cache = AsyncCache(client, prefix)
    await cache.set("a", 1)
    batcher = batcher_of(client, node_exchange)
    loop = asyncio.get_running_loop()
    for _ in range(10):  # let whatever the fixtures left ready run first
        await asyncio.sleep(0)
    assert batcher.join([("PING",)]) is None  # at once: not an awaitable
    loop.call_soon(lambda: None)
    waits = batcher.join([("PING",)])
    assert waits is not None
    assert await waits is None  # alone after the turn: the caller sends it
    before = proxy.stats.forwarded_requests
    loop.call_soon(lambda: None)
    assert await cache.get("a") == 1
    assert proxy.stats.forwarded_requests - before == 1


async def test_concurrent_cache_hits_share_one_write(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], valkey_server: EmbeddedServer, prefix: str
) -> None:
    """Each hit is a pipeline of MGET and TIME; 50 concurrent hits join one batch, whose write
    carries their 50 MGETs and one TIME, last (each hit's clock is read after its MGET)."""
    proxy, client = proxied
    cache = AsyncCache(client, prefix)
    await cache.set("a", 1)
    before = proxy.stats.forwarded_requests
    with _counter(valkey_server) as seen:
        assert await asyncio.gather(*(cache.get("a") for _ in range(50))) == [1] * 50
    assert proxy.stats.forwarded_requests - before == 1
    assert seen.names == ["MGET"] * 50 + ["TIME"]


async def test_noscript_resends_only_those_items_as_eval(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy, client = proxied
    limiter = AsyncFixedWindow(client, N, DAY, name=prefix)
    counter = AsyncBoundedCounter(client, f"{prefix}-c", 1000)
    await limiter.hit("warm")
    await counter.incr(1)
    await client.script_flush()
    await limiter.hit("reload")  # the limiter's script is cached again, the counter's is not
    before = proxy.stats.forwarded_requests
    with _counter(valkey_server) as seen:
        await asyncio.gather(
            *(limiter.hit("k") for _ in range(5)), *(counter.incr(1) for _ in range(5))
        )
    assert proxy.stats.forwarded_requests - before == 2  # the batch, then the 5 EVALs
    assert sorted(seen.names) == ["EVAL"] * 5 + ["EVALSHA"] * 10
    assert await counter.value() == 6


async def test_a_failed_item_fails_only_its_task(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], prefix: str
) -> None:
    proxy, client = proxied
    limiter = AsyncFixedWindow(client, N, DAY, name=prefix)
    await limiter.hit("warm")
    await client.set(f"{prefix}-str", "x")
    wrong = AsyncBoundedCounter(client, f"{prefix}-str", 10)  # its script meets a string key
    await client.delete(wrong.key)
    await wrong.incr(1)
    await client.delete(wrong.key)
    await client.lpush(wrong.key, "x")  # WRONGTYPE for the counter's script
    before = proxy.stats.forwarded_requests
    results = await asyncio.gather(
        *(limiter.hit("k") for _ in range(4)), wrong.incr(1), return_exceptions=True
    )
    assert proxy.stats.forwarded_requests - before == 1
    assert [type(r).__name__ for r in results[:4]] == ["Decision"] * 4
    assert isinstance(results[4], BackendError)


@pytest.mark.parametrize("cancelled", [0, 3])  # the batch's sender, or one riding along
async def test_a_task_cancelled_before_the_batch_is_sent_is_left_out(
    proxied: tuple[FaultProxy, redis.asyncio.Redis],
    valkey_server: EmbeddedServer,
    prefix: str,
    cancelled: int,
) -> None:
    _, client = proxied
    counter = AsyncBoundedCounter(client, prefix, 1000)
    await counter.incr(1)
    with _counter(valkey_server) as seen:
        tasks = [asyncio.ensure_future(counter.incr(1)) for _ in range(10)]
        await asyncio.sleep(0)  # each task has queued its command; none is sent yet
        tasks[cancelled].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[cancelled], asyncio.CancelledError)
    values = sorted(r for r in results if isinstance(r, int))
    assert values == list(range(2, 11))
    assert seen.names == ["EVALSHA"] * 9
    assert await counter.value() == 10


async def test_a_task_cancelled_in_flight_does_not_break_the_batch(
    proxied: tuple[FaultProxy, redis.asyncio.Redis], prefix: str
) -> None:
    proxy, client = proxied
    counter = AsyncBoundedCounter(client, prefix, 1000)
    await counter.incr(1)
    proxy.latency(0.2, requests=False)  # the batch is sent, its replies come late
    tasks = [asyncio.ensure_future(counter.incr(1)) for _ in range(10)]
    await asyncio.sleep(0.1)
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    proxy.pass_through()
    assert isinstance(results[0], asyncio.CancelledError)
    assert len(set(results[1:])) == 9
    assert set(results[1:]) <= set(range(2, 12))
    assert await counter.value() == 11  # the cancelled task's increment ran: it was sent


KINDS: dict[str, Any] = {
    "fixed": lambda c, n, p: AsyncFixedWindow(c, n, DAY, name=p),
    "log": lambda c, n, p: AsyncSlidingLog(c, n, DAY, name=p),
    "sliding": lambda c, n, p: AsyncSlidingWindow(c, n, DAY, name=p),
    "bucket": lambda c, n, p: AsyncTokenBucket(c, n, 1e-6, name=p),
    "gcra": lambda c, n, p: AsyncGCRA(c, 1, DAY, burst=n, name=p),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_limiter_admits_stay_exact_under_100_tasks(
    backend: Backend, async_client: Any, prefix: str, kind: str
) -> None:
    limiter = KINDS[kind](async_client, 37, prefix)
    for _ in range(3):  # three bursts of 100 on one key, each batched
        decisions = await asyncio.gather(*(limiter.hit("k") for _ in range(N)))
        if _ == 0:
            assert sum(d.allowed for d in decisions) == 37
        else:
            assert not any(d.allowed for d in decisions)


def test_autopipeline_refuses_what_it_cannot_batch(valkey_server: EmbeddedServer) -> None:
    sync_client = valkey_server.client()
    with pytest.raises(TypeError, match="asyncio redis-py client"):
        autopipeline(sync_client, False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        autopipeline(valkey_server.client(asyncio=True), 0)  # type: ignore[arg-type]
    sync_client.close()
