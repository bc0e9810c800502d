"""The Sentinel topology: a failover completes; Sentinel-aware clients follow the new primary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncBoundedCounter,
    BackendError,
    BoundedCounter,
    Cache,
    ConfigurationError,
    Gap,
    Subscriber,
    sentinel_client,
    transaction,
)
from redis_patterns.testing import SentinelTopology

pytestmark = pytest.mark.fault

WAIT = 60.0
FOLLOW = 4.0  # s: sentinel_client(recheck=0.2) follows a failover well within this


def _close(manager: redis.sentinel.Sentinel) -> None:
    for connection in manager.sentinels:
        connection.close()


def _role(address: tuple[str, int]) -> str:
    with redis.Redis(*address, socket_timeout=5) as client:
        return str(client.info("replication")["role"])


async def test_sentinel_failover_and_master_for_follows(sentinel: SentinelTopology) -> None:
    # The topology: a primary, its two replicas, three Sentinels that agree on all of them.
    old = ("127.0.0.1", sentinel.primary.port or 0)
    replicas = {("127.0.0.1", r.port) for r in sentinel.replicas}
    assert len(sentinel.sentinels) == 3
    assert len(replicas) == 2
    assert all(sentinel.primary_address(i) == old for i in range(3))
    assert _role(old) == "master"
    manager = sentinel.client()
    assert set(manager.discover_slaves(sentinel.service)) == replicas
    async_manager = redis.asyncio.sentinel.Sentinel(sentinel.sentinel_addresses, socket_timeout=5)
    # Sentinel-managed clients without automatic retries, as the library's own clients.
    primary = manager.master_for(sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    async_primary = async_manager.master_for(sentinel.service, socket_timeout=5)
    try:
        counter = BoundedCounter(primary, "fo:counter", 100)
        async_counter = AsyncBoundedCounter(async_primary, "fo:counter", 100)
        assert counter.incr() == 1
        assert await async_counter.incr() == 2
        assert primary.execute_command("WAIT", 2, 5000) == 2  # the replicas have it all

        new = await asyncio.to_thread(sentinel.failover)  # bounded; the loop keeps running

        assert new in replicas
        assert new != old
        assert manager.discover_master(sentinel.service) == new
        assert await async_manager.discover_master(sentinel.service) == new
        assert _role(new) == "master"
        # A client resolving the primary after the failover writes to the new one.
        fresh = manager.master_for(sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        async_fresh = async_manager.master_for(sentinel.service, socket_timeout=5)
        assert BoundedCounter(fresh, "fo:counter", 100).incr() == 3  # acknowledged writes kept
        assert await AsyncBoundedCounter(async_fresh, "fo:counter", 100).incr() == 4
        fresh.close()
        await async_fresh.aclose()
        with redis.Redis(*new) as direct:
            assert direct.get("fo:counter") == b"4"
    finally:
        primary.close()
        await async_primary.aclose()
        _close(manager)
        for connection in async_manager.sentinels:
            await connection.aclose()


def test_writes_on_a_pooled_connection_to_the_demoted_primary_are_lost(
    request: pytest.FixtureRequest,
) -> None:
    """Why failover loses acknowledged writes (RELIABILITY 2, Jepsen): a graceful failover
    leaves the old primary writable until Sentinel reconfigures it, and a connection opened
    before keeps writing there; those acknowledged writes vanish when it becomes a replica."""
    if not request.config.getoption("--soak"):
        pytest.skip("waits up to ~10 s for Sentinel to demote the old primary: runs under --soak")
    sentinel = request.getfixturevalue("sentinel_factory")()  # only when it runs
    old = sentinel.primary_address()
    manager = sentinel.client()
    primary = manager.master_for(sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    counter = BoundedCounter(primary, "split:counter", 100)
    assert counter.incr() == 1
    assert primary.execute_command("WAIT", 2, 5000) == 2
    new = sentinel.failover()
    assert counter.incr() == 2  # acknowledged, by the old primary, over the pooled connection
    deadline = time.monotonic() + WAIT
    while _role(old) != "slave":
        assert time.monotonic() < deadline, "Sentinel never demoted the old primary"
        time.sleep(0.1)
    with redis.Redis(*new) as direct:
        assert direct.get("split:counter") == b"1"  # the acknowledged second increment is gone
    primary.close()
    _close(manager)


def test_killed_primary_is_replaced(sentinel: SentinelTopology) -> None:
    old = sentinel.primary_address()
    with redis.Redis(*old) as direct:
        direct.set("kp:key", "before")
        assert direct.execute_command("WAIT", 2, 5000) == 2
    sentinel.primary.kill()  # SIGKILL: the Sentinels must notice (down-after 1 s) and agree

    new = sentinel.wait_for_new_primary(old, timeout=WAIT)

    assert new in {("127.0.0.1", r.port) for r in sentinel.replicas}
    manager = sentinel.client()
    primary = manager.master_for(sentinel.service, socket_timeout=5)
    assert primary.get("kp:key") == b"before"
    assert primary.set("kp:key", "after")
    primary.close()
    _close(manager)


# --- sentinel_client: following a graceful failover at once, not at the demotion ------------------


def _counter_on(server: Any, key: str) -> int:
    with server.client(socket_timeout=5) as direct:
        return int(direct.get(key) or 0)


@pytest.mark.parametrize("rp_sentinel", ["valkey"], indirect=True)
def test_sentinel_client_follows_a_graceful_failover(sentinel: SentinelTopology) -> None:
    """A long-lived redis-py Sentinel client keeps writing to the old primary until Sentinel
    demotes it (~10 s; all of it lost, see the --soak test above); `sentinel_client` moves to
    the new primary within ``recheck`` of the Sentinels naming it, without an error."""
    client = sentinel_client(sentinel.sentinel_addresses, sentinel.service, recheck=0.2)
    stock = sentinel.client().master_for(
        sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    counter, stock_counter = (
        BoundedCounter(client, "follow", 10**6),
        BoundedCounter(stock, "stock", 10**6),
    )
    assert counter.incr() == 1
    assert stock_counter.incr() == 1
    promotion = sentinel.failover_promotion()
    time.sleep(0.3)  # > recheck: the next command asks the Sentinels again
    for _ in range(5):
        counter.incr()
        stock_counter.incr()
    assert _counter_on(promotion.new, "follow") == 6  # every write reached the new primary
    assert _counter_on(promotion.new, "stock") == 1  # the stock client's went to the old one
    assert _counter_on(promotion.old, "stock") == 6  # ... which will discard them
    client.close()
    stock.close()


@pytest.mark.parametrize("rp_sentinel", ["valkey"], indirect=True)
async def test_async_sentinel_client_follows_a_graceful_failover(
    sentinel: SentinelTopology,
) -> None:
    client = sentinel_client(
        sentinel.sentinel_addresses, sentinel.service, asyncio=True, recheck=0.2
    )
    counter = AsyncBoundedCounter(client, "follow", 10**6)
    assert await counter.incr() == 1
    promotion = await asyncio.to_thread(sentinel.failover_promotion)
    await asyncio.sleep(0.3)
    for _ in range(5):
        await counter.incr()
    assert _counter_on(promotion.new, "follow") == 6
    await client.aclose()


@pytest.mark.parametrize("rp_sentinel", ["redis7"], indirect=True)
def test_a_subscriber_over_sentinel_client_moves_with_the_primary(
    sentinel: SentinelTopology,
) -> None:
    """Its pub/sub link stays open to the old primary, which still answers: the link's own
    check ends it (a gap) and it resubscribes on the new primary."""
    client = sentinel_client(sentinel.sentinel_addresses, sentinel.service, recheck=0.2)
    gaps: list[Gap] = []
    sub = Subscriber(client, ["news"], on_gap=gaps.append)
    sub.start()
    promotion = sentinel.failover_promotion()
    got = None
    deadline = time.monotonic() + FOLLOW
    with promotion.new.client() as direct:
        while got is None and time.monotonic() < deadline:
            direct.publish("news", "on the new primary")
            got = sub.get(timeout=0.05)
    assert got is not None, "the subscriber stayed on the old primary"
    assert len(gaps) == 1
    assert "primary moved" in gaps[0].error
    sub.close()
    client.close()


def test_sentinel_client_refuses_bad_arguments_before_io() -> None:
    with pytest.raises(ConfigurationError):
        sentinel_client([], "svc")
    with pytest.raises(ConfigurationError):
        sentinel_client([("127.0.0.1", 1)], "")
    with pytest.raises(ConfigurationError):
        sentinel_client([("127.0.0.1", 1)], "svc", recheck=0)


@pytest.mark.parametrize("rp_sentinel", ["valkey"], indirect=True)
def test_a_near_cache_over_sentinel_client_follows_the_primary(sentinel: SentinelTopology) -> None:
    """A near cache's listener only waits for pushes, never sends: its connection is checked
    while it waits, so invalidations published on the new primary reach it."""
    client = sentinel_client(sentinel.sentinel_addresses, sentinel.service, recheck=0.2)
    near = Cache(client, "nc", 60, local=100)
    near.set("k", 1)
    deadline = time.monotonic() + FOLLOW
    while not near.local_ready:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert near.get("k") == 1  # read from Redis into the near cache
    hits = near.stats["near_hits"]
    assert near.get("k") == 1
    assert near.stats["near_hits"] == hits + 1  # served from the near cache now
    promotion = sentinel.failover_promotion()
    with promotion.new.client() as direct:
        writer = Cache(direct, "nc", 60)
        # Well before the old primary's demotion (8-10 s), which would end the link anyway.
        deadline = time.monotonic() + FOLLOW
        writer.set("k", 2)  # invalidates, on the new primary
        while near.get("k") != 2:
            assert time.monotonic() < deadline, "the near cache kept serving the old value"
            writer.set("k", 2)  # once its listener is back on the new primary, it hears this
            time.sleep(0.05)
    near.close()
    client.close()


@pytest.mark.parametrize("rp_sentinel", ["valkey"], indirect=True)
def test_transactions_recover_once_the_old_primary_is_demoted(sentinel: SentinelTopology) -> None:
    """With redis-py's own Sentinel client: the first EXEC on the demoted primary fails
    (READONLY), and the next transaction runs on the new primary. redis-py's pipeline reset
    used to reconnect that connection to the old address (UNWATCH), bypassing the Sentinels:
    every later transaction failed at EXEC, for good."""
    client = sentinel.client().master_for(
        sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )

    def body(pipe: Any) -> None:
        pipe.get("tx")
        pipe.multi()
        pipe.incr("tx")

    transaction(client, body, "tx")  # a pooled connection to the primary
    promotion = sentinel.failover_promotion()
    with promotion.old.client() as old:  # what Sentinel does 8-10 s later, now
        old.execute_command("REPLICAOF", "127.0.0.1", promotion.new.port)
    failures = 0
    for _ in range(5):
        try:
            transaction(client, body, "tx")
        except BackendError:
            failures += 1
    assert failures <= 1  # the one EXEC refused by the demoted primary
    assert _counter_on(promotion.new, "tx") == 1 + 5 - failures
    client.close()
