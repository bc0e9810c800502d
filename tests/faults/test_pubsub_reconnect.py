"""A subscriber comes back whatever its reader's timeouts, and follows a shard channel's slot.

Both were found by the failover tests (tests/topology/test_pattern_failover.py), as messages
missed outside any reported gap:

- a reader polling with ``get(timeout=t)`` shorter than the reconnection backoff never
  reconnected: each call slept until its own deadline and returned before trying;
- a sharded subscription whose slot moved (a failover, a reshard) ended without an error: the
  node sends ``sunsubscribe`` and the link stays up, carrying nothing more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from redis_patterns import (
    AsyncPublisher,
    AsyncSubscriber,
    BackendError,
    EmbeddedCluster,
    EmbeddedServer,
    Gap,
    Publisher,
    Subscriber,
)

pytestmark = pytest.mark.fault

OUTAGE = 1.0  # s: long enough for the backoff to grow past the reader's timeout many times
POLL = 0.02  # s: the reader's timeout, shorter than every backoff step after the first
BOUND = 10.0  # s: the subscriber must be back well within this


def _restart_later(server: EmbeddedServer) -> threading.Thread:
    thread = threading.Thread(target=server.restart, kwargs={"delay": OUTAGE})
    thread.start()
    return thread


def test_short_polls_reconnect_after_an_outage(
    server_factory: Callable[..., EmbeddedServer],
) -> None:
    server = server_factory()
    gaps: list[Gap] = []
    sub = Subscriber(server.client(), ["news"], on_gap=gaps.append)
    sub.start()
    restarting = _restart_later(server)
    deadline = time.monotonic() + OUTAGE + BOUND
    while restarting.is_alive():  # the outage: every attempt is refused
        assert sub.get(timeout=POLL) is None
    publisher = Publisher(server.client())
    got = None
    while got is None and time.monotonic() < deadline:
        publisher.publish("news", "back")
        got = sub.get(timeout=POLL)
    assert got is not None, "the subscriber never reconnected"
    assert got.data == b"back"
    assert len(gaps) == 1
    sub.close()


async def test_async_short_polls_reconnect_after_an_outage(
    server_factory: Callable[..., EmbeddedServer],
) -> None:
    server = server_factory()
    client = server.client(asyncio=True)
    gaps: list[Gap] = []
    sub = AsyncSubscriber(client, ["news"], on_gap=gaps.append)
    await sub.start()
    restarting = _restart_later(server)
    deadline = time.monotonic() + OUTAGE + BOUND
    while restarting.is_alive():
        assert await sub.get(timeout=POLL) is None
    publisher = AsyncPublisher(client)
    got = None
    while got is None and time.monotonic() < deadline:
        try:
            await publisher.publish("news", "back")
        except BackendError:  # the pooled connection died with the server: the next is new
            continue
        got = await sub.get(timeout=POLL)
    assert got is not None, "the subscriber never reconnected"
    assert len(gaps) == 1
    await sub.aclose()
    await client.aclose()


def _move_away(cluster: EmbeddedCluster, channel: str) -> None:
    slot = int(cluster.client().keyslot(channel))
    owner = cluster.master_of(slot)
    target = next(m for m in cluster.masters() if m is not owner)
    cluster.move_slots(slot, slot, target)


def test_a_sharded_subscription_follows_its_slot(
    cluster_factory: Callable[..., EmbeddedCluster],
) -> None:
    cluster = cluster_factory(3, 0)
    client = cluster.client()
    gaps: list[Gap] = []
    sub = Subscriber(client, ["orders"], sharded=True, on_gap=gaps.append)
    sub.start()
    publisher = Publisher(client, sharded=True)
    publisher.publish("orders", "before")
    first = sub.get(timeout=5)
    assert first is not None
    assert first.data == b"before"
    _move_away(cluster, "orders")  # the old owner ends the subscription (sunsubscribe)
    got = None
    deadline = time.monotonic() + BOUND
    while got is None and time.monotonic() < deadline:
        publisher.publish("orders", "after")  # redis-py follows MOVED to the new owner
        got = sub.get(timeout=0.1)
    assert got is not None, "the subscription did not follow its slot"
    assert got.data == b"after"
    assert len(gaps) == 1
    assert "slot moved" in gaps[0].error
    sub.close()
    client.close()


async def test_async_a_sharded_subscription_follows_its_slot(
    cluster_factory: Callable[..., EmbeddedCluster],
) -> None:
    cluster = cluster_factory(3, 0)
    client = cluster.client(asyncio=True)
    gaps: list[Gap] = []
    sub = AsyncSubscriber(client, ["orders"], sharded=True, on_gap=gaps.append)
    await sub.start()
    publisher = AsyncPublisher(client, sharded=True)
    await publisher.publish("orders", "before")
    first = await sub.get(timeout=5)
    assert first is not None
    assert first.data == b"before"
    await asyncio.to_thread(_move_away, cluster, "orders")
    got = None
    deadline = time.monotonic() + BOUND
    while got is None and time.monotonic() < deadline:
        await publisher.publish("orders", "after")
        got = await sub.get(timeout=0.1)
    assert got is not None, "the subscription did not follow its slot"
    assert got.data == b"after"
    assert len(gaps) == 1
    await sub.aclose()
    await client.aclose()
