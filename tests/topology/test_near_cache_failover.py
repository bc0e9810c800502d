"""A near cache's listener moves to another cluster node when its own dies.

Found by the failover tests: the invalidation listener subscribed on the cluster client's default
node and, once that master was SIGKILLed, kept reconnecting to the dead address forever; the near
cache stayed bypassed (every read went to Redis) for the rest of the process's life.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from redis_patterns import AsyncCache, BackendError, Cache, EmbeddedCluster

pytestmark = pytest.mark.fault

BOUND = 15.0


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _read(cache: Cache) -> object:
    try:
        return cache.get("k")
    except BackendError:  # the client's first call after the kill may meet the dead node
        return None


def _write(cache: Cache, value: int) -> bool:
    try:
        cache.set("k", value)
    except BackendError:  # as above: one call finds the dead node, and the map is refreshed
        return False
    return True


def _listening_master(cluster: EmbeddedCluster, client: object) -> object:
    port = client.get_default_node().port  # type: ignore[attr-defined]
    node = next(n for n in cluster.nodes if n.port == port)
    assert node in cluster.masters(), "the default node is a master"
    return node


@pytest.mark.parametrize("rp_replicated_cluster", ["valkey"], indirect=True)
def test_the_listener_leaves_a_dead_node(replicated_cluster: EmbeddedCluster, prefix: str) -> None:
    cluster = replicated_cluster
    client, other = cluster.client(), cluster.client()
    near, writer = Cache(client, prefix, 60, local=100), Cache(other, prefix, 60)
    near.set("k", 1)
    _wait(lambda: near.local_ready, "the near cache never started")
    cluster.kill_master(_listening_master(cluster, client))  # type: ignore[arg-type]
    _wait(lambda: near.local_ready, "the near cache never listened again")
    # Published by the new master: reaches the listener over the cluster bus.
    _wait(lambda: _write(writer, 2), "the writer never reached the new master")
    _wait(lambda: _read(near) == 2, "the near cache kept serving the old value")
    near.close()
    client.close()
    other.close()


@pytest.mark.parametrize("rp_replicated_cluster", ["valkey"], indirect=True)
async def test_async_the_listener_leaves_a_dead_node(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated_cluster
    client = cluster.client(asyncio=True)
    near = AsyncCache(client, prefix, 60, local=100)
    await near.set("k", 1)
    deadline = time.monotonic() + BOUND
    while not near.local_ready:
        assert time.monotonic() < deadline, "the near cache never started"
        await asyncio.sleep(0.02)
    await client.initialize()
    master = _listening_master(cluster, client)
    await asyncio.to_thread(cluster.kill_master, master)  # type: ignore[arg-type]
    deadline = time.monotonic() + BOUND
    while not near.local_ready:
        assert time.monotonic() < deadline, "the near cache never listened again"
        await asyncio.sleep(0.02)
    await near.aclose()
    await client.aclose()
