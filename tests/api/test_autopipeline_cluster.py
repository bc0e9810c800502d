"""Auto-pipelining of asyncio cluster clients: one write per node, results exact, a lone call
still one command, the parts it cannot route sent the unbatched way (faults, MOVED and ASK:
tests/faults/test_autopipeline_cluster_faults.py).

Writes are counted per node by a `FaultProxy` in front of every node (the client reaches them
through ``address_remap``), commands by the MONITOR-based `CommandCounter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.exceptions import RedisClusterException

from _proxied_cluster import Proxied, keys_on, proxied_client
from redis_patterns import (
    AsyncBoundedCounter,
    AsyncCache,
    AsyncFixedWindow,
    CrossSlotError,
    EmbeddedCluster,
    autopipeline,
)
from redis_patterns._plan import Command, Pipeline
from redis_patterns._runner import AsyncRunner
from redis_patterns.testing import FaultProxy

DAY = 86400.0
PER_NODE = 20


@pytest.fixture
async def proxied(
    cluster: EmbeddedCluster, fault_proxy: Callable[..., FaultProxy]
) -> AsyncIterator[Proxied]:
    client, proxies = proxied_client(cluster, fault_proxy)
    await client.initialize()
    yield Proxied(cluster, client, proxies)
    await client.aclose()


async def test_calls_on_one_node_are_one_write_to_it(proxied: Proxied, prefix: str) -> None:
    first = proxied.masters[0]
    counters = [
        AsyncBoundedCounter(proxied.client, key, 1000)
        for key in keys_on(proxied, first, prefix, PER_NODE)
    ]
    await asyncio.gather(*(c.incr(1) for c in counters))  # script cached, connections open
    before = proxied.writes()
    with proxied.counter() as seen:
        values = await asyncio.gather(*(c.incr(1) for c in counters))
    assert values == [2] * PER_NODE
    assert proxied.since(before) == {m.port: (1 if m is first else 0) for m in proxied.masters}
    assert seen.names == ["EVALSHA"] * PER_NODE
    assert {c.node for c in seen.commands} == {f"127.0.0.1:{first.port}"}


async def test_calls_over_three_masters_are_one_write_to_each(
    proxied: Proxied, prefix: str
) -> None:
    counters = [
        AsyncBoundedCounter(proxied.client, key, 1000)
        for master in proxied.masters
        for key in keys_on(proxied, master, f"{prefix}:{master.port}", PER_NODE)
    ]
    await asyncio.gather(*(c.incr(1) for c in counters))
    before = proxied.writes()
    with proxied.counter() as seen:
        values = await asyncio.gather(*(c.incr(1) for _ in range(5) for c in counters))
    assert proxied.since(before) == {m.port: 1 for m in proxied.masters}
    assert seen.names == ["EVALSHA"] * 5 * 3 * PER_NODE
    by_counter = [sorted(v or 0 for v in values[i :: len(counters)]) for i in range(len(counters))]
    assert by_counter == [[2, 3, 4, 5, 6]] * len(counters)  # each ran once, in some order
    assert [await c.value() for c in counters] == [6] * len(counters)


async def test_cache_hits_over_three_masters_are_one_write_to_each(
    proxied: Proxied, prefix: str
) -> None:
    cache = AsyncCache(proxied.client, prefix)
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        await cache.set(key, key.upper())
    await asyncio.gather(*(cache.get(k) for k in keys))
    before = proxied.writes()
    with proxied.counter() as seen:
        values = await asyncio.gather(*(cache.get(k) for k in keys), cache.get("absent"))
    assert values == [k.upper() for k in keys] + [None]
    written = proxied.since(before)
    assert set(written.values()) == {1}, written  # each master serves some of the 61 keys
    assert seen.names == ["EVALSHA"] * 61  # a cluster's cache hit is one script call


async def test_pipelines_on_one_node_share_its_write(proxied: Proxied, prefix: str) -> None:
    """Each part a pipeline of two keyed commands and a keyless ``TIME``, which rides along:
    the node's write carries one ``TIME``, last, whose reply every part gets."""
    first = proxied.masters[0]
    keys = keys_on(proxied, first, prefix, 10)
    for key in keys:
        await proxied.client.set(key, key)
    runner = AsyncRunner(proxied.client)
    await runner.perform(Command(("TIME",)))  # the runner ready (it initializes once)

    def probe(key: str) -> Pipeline:
        return Pipeline(
            (Command(("GET", key)), Command(("GETRANGE", key, 0, 1)), Command(("TIME",)))
        )

    await asyncio.gather(*(runner.perform(probe(k)) for k in keys))  # a connection open
    before = proxied.writes()
    with proxied.counter() as seen:
        results = await asyncio.gather(*(runner.perform(probe(k)) for k in keys))
    assert [r[:2] for r in results] == [[k.encode(), k[:2].encode()] for k in keys]
    assert all(len(r[2]) == 2 for r in results)
    assert proxied.since(before) == {m.port: (1 if m is first else 0) for m in proxied.masters}
    assert sorted(seen.names) == ["GET"] * 10 + ["GETRANGE"] * 10 + ["TIME"]
    assert seen.names[-1] == "TIME"  # after every part's own commands
    assert len({tuple(r[2]) for r in results}) == 1


async def test_a_lone_call_is_one_command(proxied: Proxied, prefix: str) -> None:
    counter = AsyncBoundedCounter(proxied.client, prefix, 1000)
    await counter.incr(1)
    before = proxied.writes()
    with proxied.counter() as seen:
        assert await counter.incr(1) == 2
    assert sum(proxied.since(before).values()) == 1
    assert seen.names == ["EVALSHA"]


async def test_an_opted_out_cluster_client_sends_each_call_alone(
    proxied: Proxied, prefix: str
) -> None:
    first = proxied.masters[0]
    counters = [
        AsyncBoundedCounter(proxied.client, key, 1000)
        for key in keys_on(proxied, first, prefix, 10)
    ]
    autopipeline(proxied.client, False)
    await asyncio.gather(*(c.incr(1) for c in counters))  # 10 connections open
    before = proxied.writes()
    assert await asyncio.gather(*(c.incr(1) for c in counters)) == [2] * 10
    assert proxied.since(before)[first.port or 0] == 10
    autopipeline(proxied.client, True)
    before = proxied.writes()
    assert await asyncio.gather(*(c.incr(1) for c in counters)) == [3] * 10
    assert proxied.since(before)[first.port or 0] == 1


async def test_parts_it_cannot_route_go_the_unbatched_way(proxied: Proxied, prefix: str) -> None:
    """A command outside the key table, a multi-key command over several slots and a keyless
    command alone are each sent by their caller; the routable parts still share one write."""
    first = proxied.masters[0]
    keys = keys_on(proxied, first, prefix, 12)
    for key in keys:
        await proxied.client.set(key, "abc")
    runner = AsyncRunner(proxied.client)
    await runner.perform(Command(("TIME",)))  # the runner ready (it initializes once)
    spread = [f"{prefix}-spread:{i}" for i in range(8)]  # eight slots, on every master
    for key in spread:
        await proxied.client.set(key, "x")
    # What redis-py itself does with it: before 8.2 it refuses keys over several slots; 8.2
    # splits the command over their nodes and adds up the replies. Either way, ours is the same.
    try:
        unbatched: object = await proxied.client.execute_command("EXISTS", *spread)
    except RedisClusterException:
        unbatched = CrossSlotError
    with proxied.counter() as seen:
        results = await asyncio.gather(
            *(runner.perform(Command(("GET", key))) for key in keys[:10]),
            runner.perform(Command(("STRLEN", keys[10]))),  # not in the key table
            runner.perform(Command(("EXISTS", *spread))),  # keys in several slots
            runner.perform(Command(("TIME",))),  # no key, alone
            return_exceptions=True,
        )
    assert results[:10] == [b"abc"] * 10
    assert results[10] == 3
    if unbatched is CrossSlotError:
        assert isinstance(results[11], CrossSlotError)  # as unbatched: redis-py refuses it
    else:
        assert results[11] == unbatched == 8  # as unbatched: redis-py split it
    assert isinstance(results[12], tuple | list)
    assert len(results[12]) == 2
    sent = sorted(name for name in seen.names if name != "EXISTS")
    assert sent == ["GET"] * 10 + ["STRLEN", "TIME"]
    assert ("EXISTS" in seen.names) == (unbatched is not CrossSlotError)
    gets = {(c.node, c.client) for c in seen.commands if c.name == "GET"}
    assert len(gets) == 1  # the ten GETs on one connection


async def test_limiter_admits_stay_exact_with_tasks_on_every_master(
    proxied: Proxied, prefix: str
) -> None:
    limiter = AsyncFixedWindow(proxied.client, 37, DAY, name=prefix)
    names = [f"n{i}" for i in range(12)]
    await limiter.peek("warm")
    with proxied.counter() as seen:
        decisions = await asyncio.gather(*(limiter.hit(n) for n in names for _ in range(100)))
    for index, name in enumerate(names):
        assert sum(d.allowed for d in decisions[index * 100 : (index + 1) * 100]) == 37, name
    nodes = {c.node for c in seen.commands}
    assert len(nodes) > 1  # twelve names: spread over the masters
    # one pipeline on one connection of each (its size spans several proxy chunks)
    assert len({(c.node, c.client) for c in seen.commands}) == len(nodes)
