"""StreamQueue and Worker on real servers (standalone and cluster, sync and async)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest

from redis_patterns import (
    AsyncStreamQueue,
    AsyncWorker,
    ConfigurationError,
    StreamMessage,
    StreamQueue,
    Worker,
)
from redis_patterns.testing.pytest_plugin import Backend


def drain(worker: Worker, until: Any, cycles: int = 400) -> None:
    """Run cycles until ``until()`` holds (bounded)."""
    for _ in range(cycles):
        if until():
            return
        worker.run_once()
    raise AssertionError("the worker did not get there within the cycle budget")


async def adrain(worker: AsyncWorker, until: Any, cycles: int = 400) -> None:
    for _ in range(cycles):
        if await until():
            return
        await worker.run_once()
    raise AssertionError("the worker did not get there within the cycle budget")


# --- StreamQueue -----------------------------------------------------------------------------


def test_add_is_one_command(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix, max_len=1000)
    queue.add({"warm": 1})  # creates the group, caches the script
    with backend.counter() as seen:
        entry_id = queue.add({"order": 42, "total": 59.99})
    assert seen.names == ["EVALSHA"]
    assert entry_id.count("-") == 1


async def test_async_add_is_one_command(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    await queue.add({"warm": 1})
    with backend.counter() as seen:
        await queue.add({"order": 42})
    assert seen.names == ["EVALSHA"]
    await client.aclose()


def test_payload_round_trip_and_replay(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    payloads = [{"n": i, "tags": ["a", "b"], "price": 1.5, "note": None} for i in range(25)]
    ids = [queue.add(p) for p in payloads]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    replayed = list(queue.replay(page=7))
    assert [m.id for m in replayed] == ids
    assert [m.data for m in replayed] == payloads
    assert {m.deliveries for m in replayed} == {0}
    assert [m.id for m in queue.replay(ids[3], ids[5])] == ids[3:6]
    assert queue.info().group_exists  # add created the group, at id 0
    assert queue.info().lag == 25


def test_foreign_plain_text_fields_are_handed_over_as_text(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    queue.ensure_group()
    client.xadd(queue.key, {"who": "not json {", "n": "7"})
    got: list[StreamMessage] = []
    worker = Worker(queue, "c", got.append, block=0.1)
    drain(worker, lambda: len(got) == 1)
    assert got[0].data == {"who": "not json {", "n": 7}


def test_max_len_trims_approximately(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix, max_len=100)
    for i in range(1500):
        queue.add({"n": i})
    length = client.xlen(queue.key)
    assert 100 <= length < 1500


def test_info_pending_and_consumers(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    for i in range(5):
        queue.add({"n": i})
    client.xreadgroup("workers", "ghost", {queue.key: ">"}, count=3)
    time.sleep(0.05)
    info = queue.info()
    assert (info.length, info.pending, info.lag, info.dead_letters) == (5, 3, 2, 0)
    assert [(c.name, c.pending) for c in info.consumers] == [("ghost", 3)]
    assert info.oldest_pending_age is not None
    assert 0 <= info.oldest_pending_age < 60
    pending = queue.pending()
    assert (pending.count, pending.consumers) == (3, {"ghost": 3})


def test_info_of_a_missing_stream(client: Any, prefix: str) -> None:
    info = StreamQueue(client, prefix).info()
    assert (info.length, info.pending, info.group_exists, info.consumers) == (0, 0, False, ())
    assert StreamQueue(client, prefix).pending().count == 0


def test_keys_share_one_slot(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    assert queue.key == b"{stream:" + prefix.encode() + b"}"
    assert queue.dead_key == queue.key + b":dead"


# --- Worker ----------------------------------------------------------------------------------


def test_worker_handles_everything_and_acknowledges(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    sent = {queue.add({"n": i}) for i in range(60)}
    seen: list[str] = []
    worker = Worker(queue, "w", lambda m: seen.append(m.id), batch=7, block=0.1)
    drain(worker, lambda: len(seen) == 60)
    assert set(seen) == sent
    assert len(seen) == 60
    info = queue.info()
    assert (info.pending, info.lag) == (0, 0)
    assert worker.stats.handled == 60


async def test_async_worker_handles_everything(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    sent = {await queue.add({"n": i}) for i in range(60)}
    seen: list[str] = []

    async def handle(message: StreamMessage) -> None:
        await asyncio.sleep(0)
        seen.append(message.id)

    worker = AsyncWorker(queue, "w", handle, batch=7, block=0.1)

    async def done() -> bool:
        return len(seen) == 60

    await adrain(worker, done)
    assert set(seen) == sent
    assert (await queue.pending()).count == 0
    await client.aclose()


def test_poison_message_is_dead_lettered_and_others_flow(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    ids = [queue.add({"n": i}) for i in range(30)]
    handled: list[int] = []
    attempts: list[int] = []

    def handle(message: StreamMessage) -> None:
        if message.data["n"] == 7:
            attempts.append(message.deliveries)
            raise ValueError(f"cannot handle order {message.data['n']}")
        handled.append(message.data["n"])

    worker = Worker(queue, "w", handle, block=0.05, claim_idle=0.05, max_deliveries=3)
    drain(worker, lambda: bool(queue.dead_letters()), cycles=2000)
    assert attempts == [1, 2, 3]
    assert sorted(handled) == [n for n in range(30) if n != 7]
    [dead] = queue.dead_letters()
    assert (dead.original_id, dead.data, dead.deliveries) == (ids[7], {"n": 7}, 3)
    assert dead.error == "ValueError: cannot handle order 7"
    assert (dead.consumer, dead.group) == ("w", "workers")
    info = queue.info()
    assert (info.pending, info.dead_letters, info.length) == (0, 1, 30)
    assert worker.stats.dead_lettered == 1
    assert worker.stats.failed == 3


async def test_async_poison_message_is_dead_lettered(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    await queue.add({"n": 1})
    bad = await queue.add({"n": "bad"})

    async def handle(message: StreamMessage) -> None:
        if message.data["n"] == "bad":
            raise RuntimeError("boom")

    worker = AsyncWorker(queue, "w", handle, block=0.05, claim_idle=0.05, max_deliveries=2)

    async def dead() -> bool:
        return bool(await queue.dead_letters())

    await adrain(worker, dead, cycles=2000)
    [letter] = await queue.dead_letters()
    assert (letter.original_id, letter.error, letter.deliveries) == (bad, "RuntimeError: boom", 2)
    assert (await queue.info()).pending == 0
    await client.aclose()


def test_entries_of_a_dead_consumer_are_reclaimed(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    ids = [queue.add({"n": i}) for i in range(5)]
    client.xreadgroup("workers", "crashed", {queue.key: ">"}, count=5)
    got: list[StreamMessage] = []
    worker = Worker(queue, "rescuer", got.append, block=0.05, claim_idle=0.2)
    drain(worker, lambda: len(got) == 5, cycles=2000)
    assert [m.id for m in got] == ids
    assert {m.deliveries for m in got} == {2}
    assert worker.stats.claimed == 5
    assert queue.pending().count == 0


def test_entry_that_kills_its_consumers_is_dead_lettered_on_claim(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    entry = queue.add({"n": "crash"})
    client.xreadgroup("workers", "crashed-1", {queue.key: ">"})
    for n in range(2, 4):  # two more consumers took it and died: 3 deliveries
        client.xclaim(queue.key, "workers", f"crashed-{n}", 0, [entry])
    got: list[StreamMessage] = []
    worker = Worker(queue, "w", got.append, block=0.05, claim_idle=0.05, max_deliveries=3)
    drain(worker, lambda: bool(queue.dead_letters()), cycles=2000)
    assert got == []
    [dead] = queue.dead_letters()
    assert (dead.original_id, dead.deliveries) == (entry, 3)
    assert "not acknowledged after 3 deliveries" in dead.error
    assert queue.pending().count == 0


def test_trimmed_pending_entries_are_acknowledged_and_reported(
    backend: Backend, prefix: str
) -> None:
    """RELIABILITY 34: pending entries deleted by MAXLEN trimming clog nothing, crash nothing."""
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    ids = [queue.add({"n": i}) for i in range(10)]
    client.xreadgroup("workers", "crashed", {queue.key: ">"}, count=10)
    client.xtrim(queue.key, maxlen=3, approximate=False)  # deletes 7 pending entries
    got: list[StreamMessage] = []
    worker = Worker(queue, "w", got.append, block=0.05, claim_idle=0.05)
    drain(worker, lambda: queue.pending().count == 0, cycles=2000)
    assert [m.id for m in got] == ids[7:]
    assert sorted(worker.stats.deleted_ids) == ids[:7]
    assert worker.stats.deleted == 7
    for _ in range(5):  # and nothing keeps coming back
        worker.run_once()
    assert worker.stats.deleted == 7


def test_stop_mid_batch_releases_the_rest(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    ids = [queue.add({"n": i}) for i in range(10)]
    handled: list[str] = []

    def handle(message: StreamMessage) -> None:
        handled.append(message.id)
        if len(handled) == 3:
            worker.stop()

    worker = Worker(queue, "quitter", handle, batch=10, block=0.05, claim_idle=30)
    stats = worker.run()
    assert handled == ids[:3]
    assert (stats.handled, stats.released) == (3, 7)
    pending = client.xpending_range(queue.key, "workers", "-", "+", 100)
    assert [p["message_id"].decode() for p in pending] == ids[3:]
    assert all(p["time_since_delivered"] >= 30_000 for p in pending)
    # Claimable at once by anyone, and counted as first deliveries.
    got: list[StreamMessage] = []
    rescuer = Worker(queue, "rescuer", got.append, batch=10, block=0.05, claim_idle=30)
    rescuer.run_once()
    assert [(m.id, m.deliveries) for m in got] == [(i, 1) for i in ids[3:]]
    assert queue.pending().count == 0


def test_stopped_idle_worker_leaves_the_group(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    queue.add({"n": 1})
    worker = Worker(queue, "brief", lambda m: worker.stop(), block=0.05)
    worker.run()
    assert queue.info().consumers == ()


def test_several_workers_in_one_process(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    sent = {queue.add({"n": i}) for i in range(300)}
    seen: list[str] = []
    lock = threading.Lock()

    def handle(message: StreamMessage) -> None:
        with lock:
            seen.append(message.id)
        if len(seen) >= 300:
            for worker in workers:
                worker.stop()

    workers = [Worker(queue, f"t{i}", handle, block=0.1) for i in range(3)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert set(seen) == sent
    assert len(seen) == 300
    assert sum(w.stats.handled for w in workers) == 300
    assert queue.info().pending == 0


async def test_several_async_workers_in_one_loop(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    for i in range(200):
        await queue.add({"n": i})
    seen: set[int] = set()

    async def handle(message: StreamMessage) -> None:
        seen.add(message.data["n"])
        if len(seen) == 200:
            for worker in workers:
                worker.stop()

    workers = [AsyncWorker(queue, f"a{i}", handle, block=0.1) for i in range(3)]
    stats = await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 60)
    assert seen == set(range(200))
    assert sum(s.handled for s in stats) >= 200
    assert (await queue.info()).pending == 0
    await client.aclose()


def test_worker_recreates_a_deleted_group(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    queue.add({"n": 1})
    got: list[StreamMessage] = []
    worker = Worker(queue, "w", got.append, block=0.05)
    drain(worker, lambda: len(got) == 1)
    client.xgroup_destroy(queue.key, "workers")
    worker.run_once()  # NOGROUP: recreated at id 0, so the history is handed out again
    drain(worker, lambda: len(got) == 2)
    assert got[1].id == got[0].id


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "payload"),
    [
        ({"name": ""}, {"a": 1}),
        ({"name": None}, {"a": 1}),
        ({"name": "a{b}"}, {"a": 1}),
        ({"name": "q", "group": ""}, {"a": 1}),
        ({"name": "q", "max_len": 0}, {"a": 1}),
        ({"name": "q", "max_len": -5}, {"a": 1}),
        ({"name": "q", "max_len": 2.5}, {"a": 1}),
        ({"name": "q"}, {}),
        ({"name": "q"}, {1: "x"}),
        ({"name": "q"}, {"": "x"}),
        ({"name": "q"}, "just a string"),
        ({"name": "q"}, {"a": object()}),
        ({"name": "q", "dedupe_ttl": 0}, {"a": 1}),
    ],
)
def test_bad_queue_input_fails_before_io(backend: Backend, kwargs: Any, payload: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        StreamQueue(client, **kwargs).add(payload)
    assert seen.count == 0


async def _coroutine_handler(message: StreamMessage) -> None:
    pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consumer": ""},
        {"consumer": 7},
        {"handler": "not callable"},
        {"handler": None},
        {"handler": _coroutine_handler},
        {"max_deliveries": 0},
        {"max_deliveries": -1},
        {"max_deliveries": 1.5},
        {"claim_idle": 0},
        {"claim_idle": -1.0},
        {"claim_idle": math.nan},
        {"claim_idle": math.inf},
        {"claim_idle": True},
        {"block": 0},
        {"batch": 0},
        {"batch": 10**6},
    ],
)
def test_bad_worker_input_fails_before_io(backend: Backend, prefix: str, kwargs: Any) -> None:
    client = backend.client()
    client.ping()
    options: dict[str, Any] = {"consumer": "c", "handler": print, **kwargs}
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        Worker(StreamQueue(client, prefix), options.pop("consumer"), options.pop("handler"),
               **options)  # fmt: skip
    assert seen.count == 0


def test_async_worker_takes_only_an_async_queue(backend: Backend, prefix: str) -> None:
    with pytest.raises(TypeError, match="AsyncStreamQueue"):
        AsyncWorker(StreamQueue(backend.client(), prefix), "c", print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="asyncio"):
        AsyncStreamQueue(backend.client(), prefix)  # type: ignore[arg-type]


def test_bad_reader_arguments(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    with pytest.raises(ConfigurationError):
        queue.dead_letters(0)
    with pytest.raises(ConfigurationError):
        list(queue.replay(""))
    with pytest.raises(ConfigurationError):
        list(queue.replay(page=0))
    with pytest.raises(ConfigurationError):
        queue.add({"a": 1}, idempotency_key="")


def test_reap_deletes_only_idle_consumers_without_pending_entries(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    for i in range(3):
        queue.add({"n": i})
    client.xreadgroup("workers", "busy", {queue.key: ">"}, count=2)
    client.xgroup_createconsumer(queue.key, "workers", "gone")
    time.sleep(0.1)
    client.xgroup_createconsumer(queue.key, "workers", "fresh")
    assert queue.reap(min_idle=0.05) == ["gone"]
    assert sorted(c.name for c in queue.info().consumers) == ["busy", "fresh"]
    assert queue.pending().count == 2
    with pytest.raises(ConfigurationError):
        queue.reap(min_idle=-1)


@pytest.mark.fault
def test_reaping_cycles_never_lose_pending_entries(
    backend: Backend, prefix: str, scale: Any
) -> None:
    """RELIABILITY 33: reap cycles with entries pending; consumers deleted only when empty."""
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    unacked: set[str] = set()
    reaped = 0
    for cycle in range(scale(100, 1000)):
        queue.add({"n": cycle})
        reply = client.xreadgroup("workers", f"c{cycle % 5}", {queue.key: ">"}, count=1)
        entry_id = reply[0][1][0][0].decode() if isinstance(reply, list) else None
        if entry_id is None:  # RESP3: {stream: [[(id, fields)]]}
            entry_id = next(iter(reply.values()))[0][0][0].decode()
        unacked.add(entry_id)
        if cycle % 3 == 0:  # acknowledge some, so some consumers become empty
            done = sorted(unacked)[: len(unacked) // 2 + 1]
            client.xack(queue.key, "workers", *done)
            unacked -= set(done)
        reaped += len(queue.reap(min_idle=0))
        pending = client.xpending_range(queue.key, "workers", "-", "+", 10_000)
        assert {p["message_id"].decode() for p in pending} == unacked
    assert reaped > 0


def test_idempotency_key_makes_a_retried_add_a_no_op(backend: Backend, prefix: str) -> None:
    """RELIABILITY 35 (the producer side): a retry after an unknown outcome adds nothing."""
    queue = StreamQueue(backend.client(), prefix, dedupe_ttl=60)
    first = queue.add({"order": 1}, idempotency_key="order-1")
    with backend.counter() as seen:
        again = queue.add({"order": 1}, idempotency_key="order-1")
    assert seen.names == ["EVALSHA"]
    assert again == first
    other = queue.add({"order": 2}, idempotency_key="order-2")
    assert other != first
    assert [m.data for m in queue.replay()] == [{"order": 1}, {"order": 2}]


async def test_async_idempotency_key(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    ids = {await queue.add({"n": 1}, idempotency_key="k") for _ in range(3)}
    assert len(ids) == 1
    assert (await queue.info()).length == 1
    await client.aclose()


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (2, True), (3, True)])
def test_resp2_resp3_and_decoded_clients(
    valkey_server: Any, prefix: str, protocol: int, decode: bool
) -> None:
    client = valkey_server.client(protocol=protocol, decode_responses=decode)
    queue = StreamQueue(client, prefix)
    for i in range(5):
        queue.add({"n": i})
    client.xreadgroup("workers", "ghost", {queue.key: ">"}, count=1)
    got: list[int] = []
    worker = Worker(queue, "w", lambda m: got.append(m.data["n"]), block=0.05, claim_idle=0.05)
    drain(worker, lambda: len(got) == 5, cycles=2000)
    assert sorted(got) == list(range(5))
    assert queue.pending().count == 0
    assert [m.data["n"] for m in queue.replay()] == list(range(5))
    client.close()


# --- the same scenarios through the asyncio API ----------------------------------------------


async def test_async_entries_of_a_dead_consumer_are_reclaimed(
    backend: Backend, prefix: str
) -> None:
    sync: Any = backend.client()
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    ids = [await queue.add({"n": i}) for i in range(5)]
    sync.xreadgroup("workers", "crashed", {queue.key: ">"}, count=5)
    got: list[StreamMessage] = []
    worker = AsyncWorker(queue, "rescuer", got.append, block=0.05, claim_idle=0.2)

    async def done() -> bool:
        return len(got) == 5

    await adrain(worker, done, cycles=2000)
    assert [(m.id, m.deliveries) for m in got] == [(i, 2) for i in ids]
    assert (await queue.pending()).count == 0
    await client.aclose()


async def test_async_trimmed_pending_entries_are_acknowledged_and_reported(
    backend: Backend, prefix: str
) -> None:
    sync: Any = backend.client()
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    ids = [await queue.add({"n": i}) for i in range(10)]
    sync.xreadgroup("workers", "crashed", {queue.key: ">"}, count=10)
    sync.xtrim(queue.key, maxlen=3, approximate=False)
    got: list[StreamMessage] = []
    worker = AsyncWorker(queue, "w", got.append, block=0.05, claim_idle=0.05)

    async def empty() -> bool:
        return (await queue.pending()).count == 0

    await adrain(worker, empty, cycles=2000)
    assert [m.id for m in got] == ids[7:]
    assert sorted(worker.stats.deleted_ids) == ids[:7]
    await client.aclose()


async def test_async_stop_mid_batch_releases_the_rest(backend: Backend, prefix: str) -> None:
    sync: Any = backend.client()
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    ids = [await queue.add({"n": i}) for i in range(10)]
    handled: list[str] = []

    async def handle(message: StreamMessage) -> None:
        handled.append(message.id)
        if len(handled) == 3:
            worker.stop()

    worker = AsyncWorker(queue, "quitter", handle, batch=10, block=0.05, claim_idle=30)
    stats = await worker.run()
    assert (handled, stats.handled, stats.released) == (ids[:3], 3, 7)
    pending = sync.xpending_range(queue.key, "workers", "-", "+", 100)
    assert [p["message_id"].decode() for p in pending] == ids[3:]
    assert all(p["time_since_delivered"] >= 30_000 for p in pending)
    got: list[StreamMessage] = []
    rescuer = AsyncWorker(queue, "rescuer", got.append, batch=10, block=0.05, claim_idle=30)
    await rescuer.run_once()
    assert [(m.id, m.deliveries) for m in got] == [(i, 1) for i in ids[3:]]
    await client.aclose()


async def test_async_reap_and_info(backend: Backend, prefix: str) -> None:
    sync: Any = backend.client()
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    await queue.add({"n": 1})
    sync.xreadgroup("workers", "busy", {queue.key: ">"})
    sync.xgroup_createconsumer(queue.key, "workers", "gone")
    assert await queue.reap(min_idle=0) == ["gone"]
    info = await queue.info()
    assert ([c.name for c in info.consumers], info.pending, info.lag) == (["busy"], 1, 0)
    assert [m.data async for m in queue.replay()] == [{"n": 1}]
    await client.aclose()
