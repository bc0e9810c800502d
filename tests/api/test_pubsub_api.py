"""Publisher and Subscriber on real servers: patterns, sharding, live changes, clean close."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest

from redis_patterns import (
    AsyncPublisher,
    AsyncSubscriber,
    ConfigurationError,
    Message,
    Publisher,
    Subscriber,
)
from redis_patterns.testing.pytest_plugin import Backend


def collect(sub: Subscriber, count: int, timeout: float = 10.0) -> list[Message]:
    got: list[Message] = []
    for _ in range(count):
        message = sub.get(timeout=timeout)
        assert message is not None, f"only {len(got)} of {count} messages arrived"
        got.append(message)
    return got


def test_pattern_subscription_gets_both_order_events(backend: Backend, prefix: str) -> None:
    client = backend.client()
    with Subscriber(client, patterns=[f"{prefix}.orders.*"]) as sub:
        publisher = Publisher(client)
        publisher.publish(f"{prefix}.orders.created", {"id": 123, "total": 59.99})
        publisher.publish(f"{prefix}.orders.shipped", {"id": 120, "carrier": "FedEx"})
        publisher.publish(f"{prefix}.users.created", {"id": 1})  # does not match
        created, shipped = collect(sub, 2)
        assert sub.get(timeout=0.2) is None
    assert (created.channel, created.pattern) == (f"{prefix}.orders.created", f"{prefix}.orders.*")
    assert created.json() == {"id": 123, "total": 59.99}
    assert (shipped.channel, shipped.json()["carrier"]) == (f"{prefix}.orders.shipped", "FedEx")


async def test_async_pattern_subscription(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    async with AsyncSubscriber(client, patterns=[f"{prefix}.orders.*"]) as sub:
        publisher = AsyncPublisher(client)
        await publisher.publish(f"{prefix}.orders.created", {"id": 123})
        await publisher.publish(f"{prefix}.orders.shipped", {"id": 120})
        got = [await sub.get(timeout=10) for _ in range(2)]
    assert [(m.channel, m.pattern) for m in got if m] == [
        (f"{prefix}.orders.created", f"{prefix}.orders.*"),
        (f"{prefix}.orders.shipped", f"{prefix}.orders.*"),
    ]
    await client.aclose()


def test_payload_kinds_and_receiver_count(backend: Backend, prefix: str) -> None:
    client = backend.client()
    channel = f"{prefix}.ch"
    publisher = Publisher(client)
    assert publisher.publish(channel, "nobody listens") == 0
    with Subscriber(client, channels=[channel]) as sub:
        receivers = [publisher.publish(channel, m) for m in (b"\x00raw", "tèxt", [1, {"a": None}])]
        raw, text, obj = collect(sub, 3)
    # On a cluster too: one client's publishes and subscriptions meet on its default node, so
    # PUBLISH counts this subscriber, and the message sent before it subscribed never reaches it.
    assert receivers == [1, 1, 1]
    assert raw.data == b"\x00raw"
    assert text.text() == "tèxt"
    assert obj.json() == [1, {"a": None}]
    assert obj.pattern is None


@pytest.mark.backends("cluster")
def test_a_clients_publishes_and_subscriptions_meet_on_its_default_node(
    backend: Backend, prefix: str
) -> None:
    """redis-py sends PUBLISH to the channel's slot owner: a message run on another node reaches
    the subscriber over the cluster bus later than one run on its node, so messages to two
    channels could arrive out of order, or one from before the subscription. Both sides now
    use the client's default node."""
    client: Any = backend.client()
    others = [n for n in client.get_primaries() if n != client.get_default_node()]
    client.set_default_node(others[-1])  # not the first primary: the choice must follow it
    home = client.get_default_node()
    channel = f"{prefix}.ch"
    publisher = Publisher(client)
    with Subscriber(client, channels=[channel]) as sub:
        subscribed = dict(client.pubsub_numsub(channel, target_nodes=home))
        assert subscribed[channel.encode()] == 1  # the subscriber's link is on the default node
        with backend.counter() as seen:
            receivers = [publisher.publish(channel, i) for i in range(20)]
        assert [(c.node, c.name) for c in seen.commands] == [(home.name, "PUBLISH")] * 20
        assert receivers == [1] * 20
        assert [m.json() for m in collect(sub, 20)] == list(range(20))


@pytest.mark.backends("cluster")
async def test_async_publishes_and_subscriptions_meet_on_the_default_node(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.async_client()
    await client.initialize()
    others = [n for n in client.get_primaries() if n != client.get_default_node()]
    client.set_default_node(others[-1])
    home = client.get_default_node()
    channel = f"{prefix}.ch"
    publisher = AsyncPublisher(client)
    async with AsyncSubscriber(client, channels=[channel]) as sub:
        subscribed = dict(await client.pubsub_numsub(channel, target_nodes=home))
        assert subscribed[channel.encode()] == 1
        with backend.counter() as seen:
            receivers = [await publisher.publish(channel, i) for i in range(20)]
        assert [(c.node, c.name) for c in seen.commands] == [(home.name, "PUBLISH")] * 20
        assert receivers == [1] * 20
        got = [await sub.get(timeout=10) for _ in range(20)]
    assert [m.json() for m in got if m] == list(range(20))
    await client.aclose()


def test_publish_is_one_command(backend: Backend, prefix: str) -> None:
    publisher = Publisher(backend.client())
    with backend.counter() as seen:
        publisher.publish(f"{prefix}.ch", {"n": 1})
    assert seen.names == ["PUBLISH"]


def test_sharded_pubsub_over_several_slots(backend: Backend, prefix: str) -> None:
    client = backend.client()
    channels = [f"{prefix}.s{i}" for i in range(6)]  # spread over the cluster's shards
    with Subscriber(client, channels=channels, sharded=True) as sub:
        publisher = Publisher(client, sharded=True)
        assert [publisher.publish(c, c) for c in channels] == [1] * 6
        got = collect(sub, 6)
    assert sorted(m.text() for m in got) == sorted(channels)
    assert {m.channel for m in got} == set(channels)


async def test_async_sharded_pubsub(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    channels = [f"{prefix}.s{i}" for i in range(4)]
    async with AsyncSubscriber(client, channels=channels, sharded=True) as sub:
        publisher = AsyncPublisher(client, sharded=True)
        assert [await publisher.publish(c, c) for c in channels] == [1] * 4
        got = [await sub.get(timeout=10) for _ in channels]
    assert sorted(m.text() for m in got if m) == sorted(channels)
    await client.aclose()


def test_subscribe_and_unsubscribe_while_another_thread_reads(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    first, second = f"{prefix}.first", f"{prefix}.second"
    sub = Subscriber(client, channels=[first])
    sub.start()
    got: list[Message] = []

    def read() -> None:
        for message in sub:
            got.append(message)

    reader = threading.Thread(target=read)
    reader.start()
    publisher = Publisher(client)
    sub.subscribe(second)  # queued: the reading thread applies it within a read slice
    for _ in range(200):  # bounded: until the new subscription is live
        publisher.publish(second, "probe")
        if any(m.channel == second for m in got):
            break
        threading.Event().wait(0.02)
    sub.unsubscribe(first)
    for _ in range(200):
        if _numsub(client, first) == 0:
            break
        threading.Event().wait(0.02)
    publisher.publish(first, "after unsubscribe")
    publisher.publish(second, "last")
    for _ in range(200):
        if got and got[-1].text() == "last":
            break
        threading.Event().wait(0.02)
    sub.close()
    reader.join(10)
    assert not reader.is_alive()
    assert all(m.text() != "after unsubscribe" for m in got)
    assert got[-1].text() == "last"
    assert sub.channels == {second}


def _numsub(client: Any, channel: str) -> int:
    if hasattr(client, "get_primaries"):  # cluster: count over every node
        return sum(
            dict(client.pubsub_numsub(channel, target_nodes=node)).get(channel.encode(), 0)
            for node in client.get_primaries()
        )
    return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))


async def test_async_subscribe_while_another_task_reads(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    sub = AsyncSubscriber(client, channels=[f"{prefix}.a"])
    await sub.start()
    got: list[Message] = []

    async def read() -> None:
        async for message in sub:
            got.append(message)

    admin: Any = None if backend.is_cluster else backend.client()
    opened = 0 if admin is None else admin.info("stats")["total_connections_received"]
    reader = asyncio.create_task(read())
    await sub.psubscribe(f"{prefix}.p.*")
    publisher = AsyncPublisher(client)
    for _ in range(200):
        await publisher.publish(f"{prefix}.p.1", "via pattern")
        await asyncio.sleep(0.02)
        if got:
            break
    await sub.aclose()
    await asyncio.wait_for(reader, 10)
    assert got[0].pattern == f"{prefix}.p.*"
    assert sub.patterns == {f"{prefix}.p.*"}
    assert sub.gaps == 0
    if admin is not None:  # the confirming subscriber and the reader never read the link at
        # once (two reads in flight made redis-py reconnect it, leaking the old socket)
        received = admin.info("stats")["total_connections_received"] - opened
        assert received == 1  # the publisher's connection, and no second link
    await client.aclose()


def test_close_ends_iteration_and_releases_the_link(backend: Backend, prefix: str) -> None:
    client = backend.client()
    channel = f"{prefix}.c"
    sub = Subscriber(client, channels=[channel])
    sub.start()
    assert _numsub(client, channel) == 1
    sub.close()
    assert list(sub) == []
    assert sub.get(timeout=0.1) is None
    for _ in range(100):
        if _numsub(client, channel) == 0:
            break
        threading.Event().wait(0.02)
    assert _numsub(client, channel) == 0


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"channels": [""]},
        {"channels": [None]},
        {"channels": "a-string-not-a-list"},
        {"patterns": [""]},
        {"channels": ["a"], "patterns": ["b.*"], "sharded": True},
        {"channels": ["a"], "health_check_interval": 0},
        {"channels": ["a"], "health_check_interval": math.nan},
        {"channels": ["a"], "max_backoff": -1},
        {"channels": ["a"], "sharded": "yes"},
    ],
)
def test_bad_subscriber_input_fails_before_io(backend: Backend, kwargs: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        Subscriber(client, **kwargs).start()
    assert seen.count == 0


@pytest.mark.parametrize(("channel", "message"), [("", "x"), (None, "x"), ("c", object())])
def test_bad_publish_input_fails_before_io(backend: Backend, channel: Any, message: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        Publisher(client).publish(channel, message)
    assert seen.count == 0


def test_bad_changes_fail_before_io(backend: Backend, prefix: str) -> None:
    client = backend.client()
    with Subscriber(client, channels=[f"{prefix}.a"]) as sub:
        with backend.counter() as seen:
            for call in (sub.subscribe, sub.psubscribe, sub.unsubscribe):
                with pytest.raises(ConfigurationError):
                    call("")
            with pytest.raises(ConfigurationError):
                sub.subscribe()
            with pytest.raises(ConfigurationError):
                sub.get(timeout=-1)
        assert seen.count == 0


def test_wrong_client_flavour(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncSubscriber(backend.client(), channels=["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="asyncio"):
        AsyncPublisher(backend.client())  # type: ignore[arg-type]


def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_background_reader_delivers_and_reports_its_state(backend: Backend, prefix: str) -> None:
    client = backend.client()
    states: list[bool] = []
    got: list[bytes] = []

    def handle(message: Message) -> None:
        if message.data == b"boom":
            raise RuntimeError("a handler's bug")  # logged; the reader goes on
        got.append(message.data)

    sub = Subscriber(client, channels=[f"{prefix}.c"], on_state=states.append)
    sub.run_in_background(handle)
    assert sub.background_running
    with pytest.raises(ConfigurationError, match="already"):
        sub.run_in_background(handle)
    _until(lambda: states == [True], "the subscription")
    publisher = Publisher(client)
    for data in (b"one", b"boom", b"two"):
        publisher.publish(f"{prefix}.c", data)
    _until(lambda: got == [b"one", b"two"], "both messages")
    sub.close()
    assert states == [True, False]
    assert not sub.background_running
    with pytest.raises(ConfigurationError, match="closed"):
        sub.run_in_background(handle)


async def test_async_background_reader_awaits_its_handler(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    states: list[bool] = []
    got: list[bytes] = []

    async def handle(message: Message) -> None:
        await asyncio.sleep(0)
        got.append(message.data)

    sub = AsyncSubscriber(client, channels=[f"{prefix}.c"], on_state=states.append)
    sub.run_in_background(handle)
    for _ in range(2000):
        if states:
            break
        await asyncio.sleep(0.005)
    assert states == [True]
    await AsyncPublisher(client).publish(f"{prefix}.c", b"one")
    for _ in range(2000):
        if got:
            break
        await asyncio.sleep(0.005)
    assert got == [b"one"]
    assert sub.background_running
    await sub.aclose()
    assert states == [True, False]
    assert not sub.background_running
    await client.aclose()
