"""A cluster client's auto-pipelined batch when a node fails or a slot moves: nothing runs twice.

A lost reply (``drop_replies``) on one node fails every call in flight on that node with
`BackendUnavailableError`, the calls on the other nodes succeed, and the servers counted each
increment once; a stalled node (``blackhole``) times its calls out (`BackendTimeoutError`). A slot
moved under the client (``MOVED``) or being migrated (``ASK``) is followed: every call runs
exactly once, and after ``MOVED`` the next batch goes straight to the new owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from _proxied_cluster import Proxied, keys_on, proxied_client
from redis_patterns import (
    AsyncBoundedCounter,
    BackendTimeoutError,
    BackendUnavailableError,
    EmbeddedCluster,
    EmbeddedServer,
)
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.counter import CommandCounter

pytestmark = pytest.mark.fault
PER_NODE = 10


async def _counters(proxied: Proxied, prefix: str) -> dict[int, list[AsyncBoundedCounter]]:
    """``PER_NODE`` counters per master (by its port), each incremented once."""
    made = {
        master.port or 0: [
            AsyncBoundedCounter(proxied.client, key, 1000)
            for key in keys_on(proxied, master, f"{prefix}:{master.port}", PER_NODE)
        ]
        for master in proxied.masters
    }
    await asyncio.gather(*(c.incr(1) for cs in made.values() for c in cs))
    return made


async def _values(cluster: EmbeddedCluster, counters: list[AsyncBoundedCounter]) -> list[int]:
    with cluster.client() as direct:
        return [int(direct.get(c.key) or 0) for c in counters]


@pytest.fixture
async def proxied(
    cluster: EmbeddedCluster, fault_proxy: Callable[..., FaultProxy]
) -> Proxied:  # closed by the test (its options differ)
    client, proxies = proxied_client(cluster, fault_proxy, socket_timeout=0.5)
    await client.initialize()
    return Proxied(cluster, client, proxies)


async def test_a_lost_reply_fails_only_that_nodes_calls_once(proxied: Proxied, prefix: str) -> None:
    try:
        counters = await _counters(proxied, prefix)
        lost = proxied.masters[0]
        proxy = proxied.proxies[lost.port or 0]
        proxy.drop_replies(match=b"EVALSHA")
        before = proxied.writes()
        order = [(port, c) for port, cs in counters.items() for c in cs]
        results = await asyncio.gather(*(c.incr(1) for _, c in order), return_exceptions=True)
        proxy.pass_through()
        assert proxied.since(before)[lost.port or 0] == 1  # one batch to the failed node
        assert proxy.stats.dropped_replies == 1
        for (port, _), result in zip(order, results, strict=True):
            if port == lost.port:
                assert isinstance(result, BackendUnavailableError), result
            else:
                assert result == 2
        everything = [c for _, c in order]
        assert await _values(proxied.cluster, everything) == [2] * len(everything)  # no replay
        again = await asyncio.gather(*(c.incr(1) for c in everything))
        assert again == [3] * len(everything)  # the client recovered
    finally:
        await proxied.client.aclose()


async def test_a_stalled_node_times_out_only_its_calls(proxied: Proxied, prefix: str) -> None:
    try:
        counters = await _counters(proxied, prefix)
        stalled = proxied.masters[1]
        proxy = proxied.proxies[stalled.port or 0]
        proxy.blackhole()
        order = [(port, c) for port, cs in counters.items() for c in cs]
        results = await asyncio.gather(*(c.incr(1) for _, c in order), return_exceptions=True)
        proxy.pass_through()
        proxy.reset_connections()
        for (port, _), result in zip(order, results, strict=True):
            if port == stalled.port:
                assert isinstance(result, BackendTimeoutError), result
            else:
                assert result == 2
        values = await _values(proxied.cluster, [c for _, c in order])
        expected = [1 if port == stalled.port else 2 for port, _ in order]
        assert values == expected  # the blackhole forwarded nothing
        again = await asyncio.gather(*(c.incr(1) for _, c in order))
        assert again == [v + 1 for v in expected]
    finally:
        await proxied.client.aclose()


def _tagged(cluster: EmbeddedCluster, master: EmbeddedServer, stem: str) -> str:
    """A hash tag whose slot ``master`` serves."""
    i = 0
    while cluster.master_of(f"{{{stem}{i}}}").port != master.port:
        i += 1
    return f"{{{stem}{i}}}"


async def _warm(client: object, cluster: EmbeddedCluster, prefix: str) -> None:
    """The counter's script cached on every master (a master that never ran it answers
    ``NOSCRIPT``, and the call is sent again as ``EVAL``: not what these tests count)."""
    for master in cluster.masters():
        tag = _tagged(cluster, master, f"{prefix}-warm")
        await AsyncBoundedCounter(client, f"{tag}:w", 1000).incr(1)  # type: ignore[arg-type]


def _counter(cluster: EmbeddedCluster) -> CommandCounter:
    return CommandCounter([("127.0.0.1", m.port or 0) for m in cluster.masters()])


@pytest.fixture
def private(cluster_factory: Callable[..., EmbeddedCluster]) -> EmbeddedCluster:
    """A cluster of this test's own (its slots move), 3 masters, no replicas."""
    return cluster_factory(3, 0)


async def test_a_moved_slot_is_followed_and_nothing_runs_twice(
    private: EmbeddedCluster, prefix: str
) -> None:
    cluster = private
    source, target, other = cluster.masters()
    tag = _tagged(cluster, source, prefix)
    slot = key_slot(tag.encode())
    client = cluster.client(asyncio=True, max_connections=512)
    try:
        moving = [AsyncBoundedCounter(client, f"{tag}:{i}", 1000) for i in range(PER_NODE)]
        staying = [
            AsyncBoundedCounter(client, _tagged(cluster, m, f"{prefix}{m.port}") + ":c", 1000)
            for m in (source, other)
        ]
        everything = moving + staying
        await _warm(client, cluster, prefix)
        await asyncio.gather(*(c.incr(1) for c in everything))  # the slot map read, cached
        assert cluster.move_slots(slot, slot, target) == PER_NODE
        with _counter(cluster) as seen:
            first = await asyncio.gather(*(c.incr(1) for c in everything for _ in range(3)))
        assert sorted(v or 0 for v in first[: 3 * PER_NODE]) == sorted([2, 3, 4] * PER_NODE)
        assert [await c.value() for c in everything] == [4] * len(everything)
        on_target = [c for c in seen.commands if c.node == f"127.0.0.1:{target.port}"]
        assert len(on_target) == 3 * PER_NODE  # each moved call ran once, on the new owner
        with _counter(cluster) as seen:
            second = await asyncio.gather(*(c.incr(1) for c in moving))
        assert sorted(v or 0 for v in second) == [5] * PER_NODE
        # the corrected map: straight to the new owner, in one batch on one connection
        assert {(c.node, c.client) for c in seen.commands} == {
            (f"127.0.0.1:{target.port}", seen.commands[0].client)
        }
    finally:
        await client.aclose()


async def test_an_ask_during_a_migration_is_followed_and_nothing_runs_twice(
    private: EmbeddedCluster, prefix: str
) -> None:
    source, target, _ = private.masters()
    tag = _tagged(private, source, prefix)
    admin_source, admin_target = source.client(), target.client()
    client = private.client(asyncio=True, max_connections=512)
    cluster, slot = private, key_slot(tag.encode())
    try:
        counters = [AsyncBoundedCounter(client, f"{tag}:{i}", 1000) for i in range(PER_NODE)]
        await _warm(client, cluster, prefix)
        await asyncio.gather(*(c.incr(1) for c in counters))
        # Half-way through a migration: the keys are on the target, the source still owns the
        # slot and answers ASK for a key it no longer has.
        admin_target.execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source)
        )
        admin_source.execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target)
        )
        keys = [c.key for c in counters]
        admin_source.execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
        )
        with _counter(cluster) as seen:
            values = await asyncio.gather(*(c.incr(1) for c in counters for _ in range(2)))
        assert sorted(v or 0 for v in values) == sorted([2, 3] * PER_NODE)
        asked = [c for c in seen.commands if c.name in ("ASKING", "EVALSHA")]
        on_target = [c.name for c in asked if c.node == f"127.0.0.1:{target.port}"]
        assert on_target.count("EVALSHA") == 2 * PER_NODE  # each call ran once, there
        assert on_target.count("ASKING") == 2 * PER_NODE
        for admin in (admin_target, admin_source):  # the migration done
            admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target))
        with target.client() as direct:
            assert [int(direct.get(k) or 0) for k in keys] == [3] * PER_NODE
    finally:
        admin_target.close()
        admin_source.close()
        await client.aclose()
