"""An auto-pipelined batch whose connection fails: every call in it fails, none is replayed.

A reply lost after the server ran the batch (``drop_replies``) fails every in-flight call with
`BackendUnavailableError` and the server counted each increment exactly once; a stalled link
(``blackhole``) fails every call with `BackendTimeoutError` (outcome unknown). The client works
again once the link does.
"""

from __future__ import annotations

import asyncio

import pytest

from redis_patterns import (
    AsyncBoundedCounter,
    BackendTimeoutError,
    BackendUnavailableError,
    EmbeddedServer,
    connect,
)
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault
N = 20


async def test_a_lost_reply_fails_every_call_of_the_batch_once(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    with FaultProxy(valkey_server) as proxy:
        client = connect(proxy.url, asyncio=True)
        counter = AsyncBoundedCounter(client, prefix, 1000)
        await counter.incr(1)
        proxy.drop_replies(match=b"EVALSHA")
        before = proxy.stats.forwarded_requests
        results = await asyncio.gather(*(counter.incr(1) for _ in range(N)), return_exceptions=True)
        assert proxy.stats.forwarded_requests - before == 1  # one batch
        assert proxy.stats.dropped_replies == 1
        assert all(isinstance(r, BackendUnavailableError) for r in results), results
        proxy.pass_through()
        assert await counter.value() == 1 + N  # each ran once on the server: no replay
        assert await asyncio.gather(*(counter.incr(1) for _ in range(3))) != []
        await client.aclose()


async def test_a_stalled_batch_times_out_every_call(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    with FaultProxy(valkey_server) as proxy:
        client = connect(proxy.url, asyncio=True, socket_timeout=0.5)
        counter = AsyncBoundedCounter(client, prefix, 1000)
        await counter.incr(1)
        proxy.blackhole()
        results = await asyncio.gather(*(counter.incr(1) for _ in range(N)), return_exceptions=True)
        assert all(isinstance(r, BackendTimeoutError) for r in results), results
        proxy.pass_through()
        proxy.reset_connections()
        assert await counter.value() == 1  # the blackhole forwarded nothing
        values = await asyncio.gather(*(counter.incr(1) for _ in range(3)))
        assert sorted(v or 0 for v in values) == [2, 3, 4]
        await client.aclose()
