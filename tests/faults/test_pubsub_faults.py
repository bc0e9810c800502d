"""Pub/Sub faults (RELIABILITY 28-30): restarts, resets, half-open links, a slow subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncPublisher,
    AsyncSubscriber,
    BackendError,
    EmbeddedServer,
    Gap,
    Message,
    Publisher,
    Subscriber,
    connect,
)
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault


@pytest.fixture(params=["valkey", "redis-server"])
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    binary = None if request.param == "valkey" else "redis-server"
    if binary and shutil.which(binary) is None:
        pytest.skip("redis-server is not on PATH")
    with EmbeddedServer(binary) as made:
        yield made


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _numsub(client: Any, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))


def _loss_runs(published: list[int], received: list[int]) -> int:
    """Stretches of consecutively *published* messages that never arrived.

    Counted in publishing order, not by number: publishes that failed while the server was down
    are not in ``published``, so the message lost when the server was killed and those lost
    before the resubscription form one run, as they are one gap.
    """
    got = set(received)
    runs, inside = 0, False
    for seq in published:
        if seq not in got and not inside:
            runs += 1
        inside = seq not in got
    return runs


def test_restart_resubscribes_and_counts_a_gap(server: EmbeddedServer) -> None:
    client = connect(server.url)
    gaps: list[Gap] = []
    sub = Subscriber(client, channels=["news"], patterns=["orders.*"], on_gap=gaps.append)
    sub.start()
    server.restart()
    publisher = Publisher(connect(server.url))
    got: Message | None = None
    for _ in range(500):  # bounded: until the subscriber is back (it reconnects while reading)
        publisher.publish("orders.created", "after restart")
        got = sub.get(timeout=0.02)
        if got is not None:
            break
    assert got is not None, "the subscriber did not come back"
    assert (got.channel, got.pattern) == ("orders.created", "orders.*")
    assert sub.gaps == 1
    assert len(gaps) == 1
    assert gaps[0].duration >= 0
    assert "cannot reach" in gaps[0].error or "closed" in gaps[0].error.lower()
    assert (sub.channels, sub.patterns) == (frozenset({"news"}), frozenset({"orders.*"}))
    fresh = connect(server.url)  # the restarted server sees both subscriptions again
    assert _numsub(fresh, "news") == 1
    assert fresh.pubsub_numpat() == 1
    sub.close()


async def test_async_restart_resubscribes_and_counts_a_gap(server: EmbeddedServer) -> None:
    client = connect(server.url, asyncio=True)
    gaps: list[Gap] = []
    sub = AsyncSubscriber(client, channels=["news"], patterns=["orders.*"], on_gap=gaps.append)
    await sub.start()
    await asyncio.to_thread(server.restart)
    publisher = AsyncPublisher(client)
    got: Message | None = None
    for _ in range(500):
        # The publisher's pooled connection broke with the restart: the next one is fresh.
        with contextlib.suppress(BackendError):
            await publisher.publish("news", "after restart")
        got = await sub.get(timeout=0.02)
        if got is not None:
            break
    assert got is not None, "the subscriber did not come back"
    assert got.channel == "news"
    assert (sub.gaps, len(gaps)) == (1, 1)
    assert (sub.channels, sub.patterns) == (frozenset({"news"}), frozenset({"orders.*"}))
    fresh = connect(server.url)
    assert _numsub(fresh, "news") == 1
    assert fresh.pubsub_numpat() == 1
    await sub.aclose()
    await client.aclose()


def test_background_reader_reports_a_restart_and_comes_back(server: EmbeddedServer) -> None:
    """``on_state`` says False once the link broke and True once resubscribed; the reader
    resubscribes by itself and delivers again."""
    states: list[bool] = []
    got: list[bytes] = []
    sub = Subscriber(connect(server.url), channels=["news"], on_state=states.append)
    sub.run_in_background(lambda message: got.append(message.data))
    _until(lambda: states == [True], 10, "the subscription")
    server.restart()
    _until(lambda: states == [True, False, True], 30, "the resubscription")
    publisher = Publisher(connect(server.url))
    publisher.publish("news", "after restart")
    _until(lambda: got == [b"after restart"], 10, "the message")
    assert sub.gaps == 1
    sub.close()
    assert states == [True, False, True, False]


async def test_async_background_reader_reports_a_restart_and_comes_back(
    server: EmbeddedServer,
) -> None:
    states: list[bool] = []
    client = connect(server.url, asyncio=True)
    sub = AsyncSubscriber(client, channels=["news"], on_state=states.append)
    sub.run_in_background(lambda message: None)
    for _ in range(2000):
        if states == [True]:
            break
        await asyncio.sleep(0.005)
    await asyncio.to_thread(server.restart)
    for _ in range(6000):
        if states == [True, False, True]:
            break
        await asyncio.sleep(0.005)
    assert states == [True, False, True]
    await sub.aclose()
    assert states == [True, False, True, False]
    await client.aclose()


async def test_cancelling_a_get_that_is_reconnecting_cancels_it(server: EmbeddedServer) -> None:
    """A cancellation that lands while the link is being (re)opened ends the call; it used to
    become a broken-link error, which the reconnect loop swallowed, so the task never ended."""
    client = connect(server.url, asyncio=True)
    sub = AsyncSubscriber(client, channels=["news"])
    server.pause()  # connections are accepted, nothing is answered: opening hangs
    try:
        task = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
    finally:
        server.resume()
        await sub.aclose()
        await client.aclose()


def test_restarts_during_sequenced_publishing(
    server: EmbeddedServer, scale: Callable[[int, int], int]
) -> None:
    """RELIABILITY 28: gaps reported == restarts; no duplicates; losses only inside gaps."""
    restarts = scale(5, 50)
    gaps: list[Gap] = []
    sub = Subscriber(connect(server.url), channels=["seq"], on_gap=gaps.append)
    sub.start()
    received: list[int] = []
    published: list[int] = []
    stop = threading.Event()

    def read() -> None:
        for message in sub:
            received.append(int(message.text()))

    def publish() -> None:
        publisher = Publisher(connect(server.url))
        seq = 0
        while not stop.is_set():
            try:
                publisher.publish("seq", str(seq))
                published.append(seq)
            except BackendError:
                time.sleep(0.01)
            seq += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=read), threading.Thread(target=publish)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(restarts):
            mark = len(received)
            _until(lambda m=mark: len(received) > m + 5, 30, "messages to flow")  # type: ignore[misc]
            server.restart()
        mark = len(received)
        _until(lambda: len(received) > mark + 5, 30, "messages after the last restart")
    finally:
        stop.set()
        threads[1].join(10)
        sub.close()
        threads[0].join(10)
    assert sub.gaps == restarts
    assert len(gaps) == restarts
    assert received == sorted(set(received))  # in order, no duplicates
    assert set(received) <= set(published)
    missing = sorted(set(published) - set(received))
    runs = _loss_runs(published, received)
    assert runs <= restarts  # every loss falls inside a reported gap
    longest = max(g.duration for g in gaps)
    print(f"\n{restarts} restarts: {len(published)} published, {len(missing)} missed "
          f"in {runs} runs, longest gap {longest * 1000:.1f} ms")  # fmt: skip


async def test_async_restarts_during_sequenced_publishing(
    server: EmbeddedServer, scale: Callable[[int, int], int]
) -> None:
    """RELIABILITY 28 through the asyncio API."""
    restarts = scale(5, 50)
    gaps: list[Gap] = []
    client = connect(server.url, asyncio=True)
    sub = AsyncSubscriber(client, channels=["seq"], on_gap=gaps.append)
    await sub.start()
    received: list[int] = []
    published: list[int] = []
    stop = asyncio.Event()

    async def read() -> None:
        async for message in sub:
            received.append(int(message.text()))

    async def publish() -> None:
        own = connect(server.url, asyncio=True)
        publisher = AsyncPublisher(own)
        seq = 0
        while not stop.is_set():
            try:
                await publisher.publish("seq", str(seq))
                published.append(seq)
            except BackendError:
                await asyncio.sleep(0.01)
            seq += 1
            await asyncio.sleep(0.002)
        await own.aclose()

    async def flowing(mark: int) -> None:
        for _ in range(1500):  # bounded
            if len(received) > mark + 5:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("messages stopped flowing")

    tasks = [asyncio.create_task(read()), asyncio.create_task(publish())]
    try:
        for _ in range(restarts):
            await flowing(len(received))
            await asyncio.to_thread(server.restart)
        await flowing(len(received))
    finally:
        stop.set()
        await asyncio.wait_for(tasks[1], 10)
        await sub.aclose()
        await asyncio.wait_for(tasks[0], 10)
        await client.aclose()
    assert (sub.gaps, len(gaps)) == (restarts, restarts)
    assert received == sorted(set(received))
    assert _loss_runs(published, received) <= restarts


def test_half_open_link_is_detected_by_ping(server: EmbeddedServer) -> None:
    """RELIABILITY 29: the server stops answering (SIGSTOP) but the socket stays open."""
    gaps: list[Gap] = []
    sub = Subscriber(
        connect(server.url), channels=["hb"], on_gap=gaps.append, health_check_interval=0.2
    )
    sub.start()
    server.pause()
    try:
        # Nothing arrives; within 2 health intervals the PING goes unanswered: link dropped.
        deadline = time.monotonic() + 10
        while sub.connected and time.monotonic() < deadline:
            sub.get(timeout=0.05)
        assert not sub.connected
        assert sub.gaps == 1
    finally:
        server.resume()
    publisher = Publisher(connect(server.url))
    got = None
    for _ in range(500):
        publisher.publish("hb", "alive")
        got = sub.get(timeout=0.05)
        if got is not None:
            break
    assert got is not None
    assert got.text() == "alive"
    assert (sub.gaps, len(gaps)) == (1, 1)
    sub.close()


def test_slow_subscriber_cut_by_the_output_buffer_limit_recovers(server: EmbeddedServer) -> None:
    """RELIABILITY 30 (small): a subscriber that stops reading is disconnected by the server's
    pub/sub output-buffer limit; the disconnect is reported as a gap and recovered from."""
    admin = connect(server.url)
    admin.config_set("client-output-buffer-limit", "pubsub 256kb 0 0")
    gaps: list[Gap] = []
    sub = Subscriber(connect(server.url), channels=["firehose"], on_gap=gaps.append)
    sub.start()
    publisher = Publisher(connect(server.url))
    # 12 MB while the subscriber reads nothing (it is "stopped"): more than loopback's socket
    # buffers hold. Small messages: Valkey 9 accounts large payloads by reference, so 64 KB
    # messages never reach its output-buffer limit.
    blob = b"x" * 1024
    for _ in range(12_000):
        publisher.publish("firehose", blob)
    # The server disconnected it: its output buffer is gone, memory back to normal.
    _until(lambda: admin.client_list(_type="pubsub") == [], 10, "the server to cut the subscriber")
    drained = 0
    got: Message | None = None
    for _ in range(20_000):  # bounded: read what the kernel buffered, notice EOF, reconnect
        got = sub.get(timeout=0.01)
        if got is None:
            publisher.publish("firehose", b"small")
        elif got.data == b"small":
            break
        else:
            drained += 1
    assert got is not None
    assert got.data == b"small"
    assert (sub.gaps, len(gaps)) == (1, 1)
    print(f"\nslow subscriber: read {drained} buffered messages, then 1 gap, then live again")
    sub.close()


@pytest.fixture
def proxy(server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(server)


def test_half_open_link_through_a_blackholing_proxy(
    server: EmbeddedServer, proxy: FaultProxy
) -> None:
    """RELIABILITY 29: the proxy swallows everything both ways (no FIN, no RST)."""
    gaps: list[Gap] = []
    client = redis.Redis(host="127.0.0.1", port=proxy.port, retry=Retry(NoBackoff(), 0))
    sub = Subscriber(client, channels=["hb"], on_gap=gaps.append, health_check_interval=0.2)
    sub.start()
    proxy.blackhole()
    deadline = time.monotonic() + 10
    while sub.connected and time.monotonic() < deadline:
        sub.get(timeout=0.05)
    assert not sub.connected  # the unanswered PING gave the link away
    assert sub.gaps == 1
    proxy.pass_through()
    proxy.reset_connections()  # the old, silent links go; new ones pass through
    publisher = Publisher(connect(server.url))
    got = None
    for _ in range(500):
        publisher.publish("hb", "alive")
        got = sub.get(timeout=0.05)
        if got is not None:
            break
    assert got is not None
    assert (sub.gaps, len(gaps)) == (1, 1)
    sub.close()
    client.close()


def test_connection_resets_during_sequenced_publishing(
    server: EmbeddedServer, proxy: FaultProxy, scale: Callable[[int, int], int]
) -> None:
    """RELIABILITY 28 with RSTs: each reset is one reported gap; no duplicates."""
    resets = scale(5, 50)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, retry=Retry(NoBackoff(), 0))
    sub = Subscriber(client, channels=["seq"])
    sub.start()
    publisher = Publisher(connect(server.url))
    received: list[int] = []
    seq = 0

    def delivered_from(first: int) -> None:
        # Publish until a message numbered >= first arrives: the link through the proxy is up.
        nonlocal seq
        for _ in range(1000):  # bounded
            publisher.publish("seq", str(seq))
            seq += 1
            message = sub.get(timeout=0.01)
            while message is not None:
                received.append(int(message.text()))
                if received[-1] >= first:
                    return
                message = sub.get(timeout=0)
        raise AssertionError("the subscriber did not come back")

    delivered_from(0)
    for _ in range(resets):
        proxy.reset_connections()  # RST every link once; the reconnection passes
        delivered_from(seq)
    assert sub.gaps == resets
    assert received == sorted(set(received))  # in order, no duplicates
    sub.close()
    client.close()
