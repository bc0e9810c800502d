"""Scenario 13: a reply lost after the server ran a non-idempotent script, with and without retries.

The evidence for the library's retry decision (docs/architecture.md "Retries"): redis-py's default
`Retry` re-sends a command after a connection error, so an increment whose reply was lost runs
twice on a stock cluster client; the clients `redis_patterns.connect` and `EmbeddedCluster.client`
return do not re-send, and on a standalone client a pattern's call never goes through the
client's Retry (an exchange of its own), so each call runs at most once. A cluster client is put
behind one proxy per node (``address_remap``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
import redis.asyncio
import redis.cluster

import redis_patterns
from redis_patterns import (
    AsyncBoundedCounter,
    BackendUnavailableError,
    BoundedCounter,
    EmbeddedCluster,
    EmbeddedServer,
    RedisPatternsWarning,
)
from redis_patterns.testing import FaultProxy, History, LinOp, Model, check_linearizable
from redis_patterns.testing.history import UNKNOWN

pytestmark = pytest.mark.fault

LIMIT = 10**9
DROP = 0.10


def _server_value(server: EmbeddedServer, key: str) -> int:
    with server.client() as direct:
        return int(direct.get(key) or 0)


def test_no_retry_applies_each_call_at_most_once(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    calls = scale(200, 5000)
    proxy = fault_proxy(valkey_server, seed=13)
    key = f"{prefix}:c"
    with redis_patterns.connect(proxy.url, socket_timeout=5) as client:
        counter = BoundedCounter(client, key, LIMIT)
        counter.incr()  # warm the script cache and the connection
        proxy.drop_replies(DROP, match="EVALSHA")
        history = History()
        ok = failed = 0
        for _ in range(calls):
            try:
                # A lost reply is an unknown outcome: recorded as "info", not as a failure.
                with history.operation("incr", "client") as op:
                    op.ok(counter.incr())
                ok += 1
            except BackendUnavailableError:
                failed += 1
        proxy.pass_through()
    executed = proxy.stats.matched_requests  # EVALSHAs that reached the server during the run
    assert ok + failed == calls
    assert failed == proxy.stats.dropped_replies > 0  # every lost reply surfaced as an error
    assert executed == calls  # no call was sent twice ...
    assert _server_value(valkey_server, key) == 1 + executed  # ... and each ran exactly once
    # The client's own view is consistent: some order of "add 1" steps explains every reply.
    assert check_linearizable(_incr_ops(history), COUNTER).ok is True


async def test_async_no_retry_applies_each_call_at_most_once(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    calls = scale(200, 5000)
    proxy = fault_proxy(valkey_server, seed=13)
    key = f"{prefix}:c"
    client = redis_patterns.connect(proxy.url, asyncio=True, socket_timeout=5)
    try:
        counter = AsyncBoundedCounter(client, key, LIMIT)
        await counter.incr()
        proxy.drop_replies(DROP, match="EVALSHA")
        failed = 0
        for _ in range(calls):
            try:
                await counter.incr()
            except BackendUnavailableError:
                failed += 1
        proxy.pass_through()
    finally:
        await client.aclose()
    assert failed == proxy.stats.dropped_replies > 0
    assert proxy.stats.matched_requests == calls
    assert _server_value(valkey_server, key) == 1 + calls


def test_redis_py_default_retry_is_not_used_for_a_patterns_call(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    """A stock ``redis.Redis`` (default Retry) would hide a lost reply by running the call
    again; a pattern's call on a standalone client goes out in an exchange of its own, which
    never re-sends: each call runs at most once, as on the library's own clients. (The library
    still warns about the client: its own calls, a transaction without WATCH and a cluster
    client's calls are still re-sent by it.)"""
    calls = scale(200, 5000)
    proxy = fault_proxy(valkey_server, seed=13)
    key = f"{prefix}:c"
    # redis-py's defaults. (Built from host/port: that is the path where the client's default
    # Retry reaches its connections; ``Redis.from_url`` in redis-py 8.1 leaves them at 0 retries.)
    with redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5) as client:
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() > 0
        with pytest.warns(RedisPatternsWarning, match="applied twice"):  # the library says so
            counter = BoundedCounter(client, key, LIMIT)
        counter.incr()
        proxy.drop_replies(DROP, match="EVALSHA")
        history = History()
        failed = 0
        for _ in range(calls):
            try:
                with history.operation("incr", "client") as op:
                    op.ok(counter.incr())
            except BackendUnavailableError:
                failed += 1
        proxy.pass_through()
    assert failed == proxy.stats.dropped_replies > 0  # every lost reply surfaced as an error
    assert proxy.stats.matched_requests == calls  # no call was sent twice ...
    assert _server_value(valkey_server, key) == 1 + calls  # ... and each ran exactly once
    assert check_linearizable(_incr_ops(history), COUNTER).ok is True


def _counter_step(state: int, op: object, output: object) -> tuple[bool, int]:
    new = state + 1
    return (output is UNKNOWN or output == new), new


# A counter that starts at 1 (the warm-up call) and adds 1 per call, returning the new value.
COUNTER = Model(init=lambda: 1, step=_counter_step)


def _incr_ops(history: History) -> list[LinOp]:
    return [LinOp.from_event(e, "incr", e.value) for e in history if e.status != "fail"]


async def test_redis_py_asyncio_default_retry_is_not_used_for_a_patterns_call(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    """The same with a stock ``redis.asyncio.Redis``."""
    calls = scale(200, 5000)
    proxy = fault_proxy(valkey_server, seed=13)
    key = f"{prefix}:c"
    client = redis.asyncio.Redis(host=proxy.host, port=proxy.port, socket_timeout=5)
    try:
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            counter = AsyncBoundedCounter(client, key, LIMIT)
        await counter.incr()
        proxy.drop_replies(DROP, match="EVALSHA")
        failed = 0
        for _ in range(calls):
            try:
                await counter.incr()
            except BackendUnavailableError:
                failed += 1
        proxy.pass_through()
    finally:
        await client.aclose()
    assert failed == proxy.stats.dropped_replies > 0
    assert proxy.stats.matched_requests == calls
    assert _server_value(valkey_server, key) == 1 + calls


# --- the same through a cluster client --------------------------------------------------------


def _proxied(
    cluster: EmbeddedCluster, fault_proxy: Callable[..., FaultProxy]
) -> tuple[list[FaultProxy], Callable[[tuple[str, int]], tuple[str, int]]]:
    """A proxy in front of every node, and the ``address_remap`` that routes a client through."""
    by_port = {node.port: fault_proxy(node, seed=13 + i) for i, node in enumerate(cluster.nodes)}

    def remap(address: tuple[str, int]) -> tuple[str, int]:
        proxy = by_port.get(address[1])
        return (proxy.host, proxy.port) if proxy is not None else address

    return list(by_port.values()), remap


def _hammer(counter: BoundedCounter, proxies: list[FaultProxy], calls: int) -> int:
    """``calls`` increments while the proxies lose 10 % of the replies; returns the errors."""
    for proxy in proxies:
        proxy.drop_replies(DROP, match="EVALSHA")
    failed = 0
    for _ in range(calls):
        try:
            counter.incr()
        except BackendUnavailableError:
            failed += 1
    for proxy in proxies:
        proxy.pass_through()
    return failed


def _totals(proxies: list[FaultProxy]) -> tuple[int, int]:
    """(EVALSHAs the servers executed, replies lost) over every proxy."""
    executed = sum(p.stats.matched_requests for p in proxies)
    return executed, sum(p.stats.dropped_replies for p in proxies)


def _cluster_value(cluster: EmbeddedCluster, key: bytes) -> int:
    with cluster.client() as direct:
        return int(direct.get(key) or 0)


def test_embedded_cluster_client_applies_each_call_at_most_once(
    cluster: EmbeddedCluster,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    calls = scale(200, 5000)
    proxies, remap = _proxied(cluster, fault_proxy)
    with cluster.client(address_remap=remap) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        counter.incr()  # warm the script cache and the connections
        failed = _hammer(counter, proxies, calls)
    executed, dropped = _totals(proxies)
    assert failed == dropped > 0  # every lost reply surfaced as an error ...
    assert executed == calls  # ... no call was sent twice ...
    assert _cluster_value(cluster, counter.key) == 1 + calls  # ... and each ran exactly once


async def test_async_embedded_cluster_client_applies_each_call_at_most_once(
    cluster: EmbeddedCluster,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    calls = scale(200, 5000)
    proxies, remap = _proxied(cluster, fault_proxy)
    client = cluster.client(asyncio=True, address_remap=remap)
    try:
        counter = AsyncBoundedCounter(client, f"{prefix}:c", LIMIT)
        await counter.incr()
        for proxy in proxies:
            proxy.drop_replies(DROP, match="EVALSHA")
        failed = 0
        for _ in range(calls):
            try:
                await counter.incr()
            except BackendUnavailableError:
                failed += 1
        for proxy in proxies:
            proxy.pass_through()
    finally:
        await client.aclose()
    executed, dropped = _totals(proxies)
    assert failed == dropped > 0
    assert executed == calls
    assert _cluster_value(cluster, counter.key) == 1 + calls


def test_redis_py_default_cluster_retry_double_applies(
    cluster: EmbeddedCluster,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    """A stock ``RedisCluster`` re-sends too: what `EmbeddedCluster.client` turns off."""
    calls = scale(200, 5000)
    proxies, remap = _proxied(cluster, fault_proxy)
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.startup_nodes]
    with redis.cluster.RedisCluster(startup_nodes=nodes, address_remap=remap) as client:
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        counter.incr()
        assert _hammer(counter, proxies, calls) == 0  # never raises: the client ran it again
    executed, dropped = _totals(proxies)
    assert dropped > 0
    assert executed == calls + dropped
    assert _cluster_value(cluster, counter.key) == 1 + calls + dropped
