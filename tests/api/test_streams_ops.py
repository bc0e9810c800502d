"""Queue operations on real servers: replaying and purging dead letters, workers reaping idle
consumers (standalone and cluster, sync and async)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from redis_patterns import (
    AsyncStreamQueue,
    AsyncWorker,
    BackendError,
    ConfigurationError,
    EmbeddedServer,
    StreamMessage,
    StreamQueue,
    Worker,
)
from redis_patterns.testing.pytest_plugin import Backend


def _raise(message: StreamMessage) -> None:
    raise ValueError(f"cannot handle {message.data}")


def dead_letter_all(queue: StreamQueue, count: int) -> None:
    """Run a worker whose handler always fails until ``count`` letters are dead."""
    worker = Worker(queue, "failing", _raise, max_deliveries=1, block=0.05, reap_idle=None)
    for _ in range(100):
        if queue.info().dead_letters >= count:
            return
        worker.run_once()
    raise AssertionError("the entries were not dead-lettered")


def handle_all(queue: StreamQueue, count: int) -> list[StreamMessage]:
    seen: list[StreamMessage] = []
    worker = Worker(queue, "fixed", seen.append, block=0.05, reap_idle=None)
    for _ in range(100):
        if len(seen) >= count:
            break
        worker.run_once()
    return seen


def test_replayed_letters_are_handled_again_with_a_replay_record(
    backend: Backend, prefix: str
) -> None:
    queue = StreamQueue(backend.client(), prefix)
    first_ids = [queue.add({"order": n, "note": "x"}) for n in range(3)]
    dead_letter_all(queue, 3)
    letters = queue.dead_letters()
    assert [d.original_id for d in letters] == first_ids
    assert all(d.replays == 0 for d in letters)

    result = queue.replay_dead_letters([letters[1].id, letters[1].id, "1-1"])
    assert list(result.replayed) == [letters[1].id]
    assert result.missing == (letters[1].id, "1-1")  # the repeat found it gone: no duplicate
    assert [d.id for d in queue.dead_letters()] == [letters[0].id, letters[2].id]
    [message] = handle_all(queue, 1)
    assert message.id == result.replayed[letters[1].id]
    assert message.data == {"order": 1, "note": "x"}  # the payload, without the record
    assert (message.replays, message.original_id, message.deliveries) == (1, first_ids[1], 1)

    # Fails again, and is replayed again: the count goes up, the original id stays.
    again = queue.replay_dead_letters()
    assert again.count == 2
    assert again.missing == ()
    dead_letter_all(queue, 2)
    failed_again = queue.dead_letters()
    assert [d.replays for d in failed_again] == [1, 1]
    assert [d.data for d in failed_again] == [{"order": 0, "note": "x"}, {"order": 2, "note": "x"}]
    assert [d.original_id for d in failed_again] == list(again.replayed.values())
    queue.replay_dead_letters(count=1)
    [message] = handle_all(queue, 1)
    assert (message.data["order"], message.replays, message.original_id) == (0, 2, first_ids[0])
    assert queue.info().dead_letters == 1


async def test_async_replay_and_purge(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    ids = [await queue.add({"n": n}) for n in range(4)]
    worker = AsyncWorker(queue, "failing", _raise, max_deliveries=1, block=0.05, reap_idle=None)
    while (await queue.info()).dead_letters < 4:
        await worker.run_once()
    letters = await queue.dead_letters()
    result = await queue.replay_dead_letters([letters[0].id], batch=1)
    assert result.count == 1
    seen: list[StreamMessage] = []
    fixed = AsyncWorker(queue, "fixed", seen.append, block=0.05, reap_idle=None)
    while not seen:
        await fixed.run_once()
    assert (seen[0].data, seen[0].replays, seen[0].original_id) == ({"n": 0}, 1, ids[0])
    assert await queue.purge_dead_letters([letters[1].id, "1-1"]) == 1
    assert [d.id for d in await queue.dead_letters()] == [letters[2].id, letters[3].id]
    assert await queue.purge_dead_letters() == 2
    assert (await queue.info()).dead_letters == 0
    assert await queue.purge_dead_letters() == 0
    await client.aclose()


def test_one_round_trip_per_batch(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    for n in range(8):
        queue.add({"n": n})
    dead_letter_all(queue, 8)
    letters = [d.id for d in queue.dead_letters()]
    queue.replay_dead_letters(["1-1"])  # loads the script: not part of the counts below
    with backend.counter() as seen:
        by_id = queue.replay_dead_letters(letters[:5], batch=2)
    assert by_id.count == 5
    assert seen.names == ["EVALSHA"] * 3  # 2 + 2 + 1
    with backend.counter() as seen:
        rest = queue.replay_dead_letters(batch=3)
    assert rest.count == 3
    assert seen.names == ["EVALSHA"]  # the bound was reached: no empty call at the end
    dead_letter_all(queue, 8)
    with backend.counter() as seen:
        assert queue.replay_dead_letters(batch=4).count == 8
    assert seen.names == ["EVALSHA"] * 2
    with backend.counter() as seen:
        assert queue.replay_dead_letters().count == 0
    assert seen.names == ["EVALSHA"]
    assert queue.info().length == 8 + 8 + 5 + 3  # every replay is a new entry
    with backend.counter() as seen:
        assert queue.purge_dead_letters() == 0
    assert seen.names == ["XTRIM"]


def test_replay_of_a_deleted_stream_recreates_it_with_its_group(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    queue.add({"n": 1})
    dead_letter_all(queue, 1)
    client.delete(queue.key)  # the stream (and its group) gone, the dead letters kept
    assert queue.replay_dead_letters().count == 1
    info = queue.info()
    assert (info.group_exists, info.length, info.lag, info.dead_letters) == (True, 1, 1, 0)


@pytest.mark.parametrize("binary", [None, "redis7"])
def test_a_refused_replay_loses_no_letter(
    server_factory: Callable[..., EmbeddedServer], prefix: str, binary: str | None
) -> None:
    """The server refuses the script (out of memory): every letter stays where it was."""
    server = server_factory(binary)
    client = server.client()
    queue = StreamQueue(client, prefix)
    for n in range(5):
        queue.add({"n": n, "blob": "x" * 1000})
    dead_letter_all(queue, 5)
    before = [d.id for d in queue.dead_letters()]
    length = queue.info().length
    client.config_set("maxmemory", 1)  # any write is refused now
    try:
        with pytest.raises(BackendError, match="maxmemory"):
            queue.replay_dead_letters()
        with pytest.raises(BackendError, match="maxmemory"):
            queue.replay_dead_letters(before[:2])
    finally:
        client.config_set("maxmemory", 0)
    assert [d.id for d in queue.dead_letters()] == before
    assert queue.info().length == length
    assert queue.replay_dead_letters().count == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ids": "1-0"}, "list of entry ids"),
        ({"ids": ["1-0", "nope"]}, "not a stream entry id"),
        ({"ids": [b"1-0"]}, "not a stream entry id"),
        ({"ids": ["1-0"], "count": 1}, "not both"),
        ({"count": 0}, "count"),
        ({"batch": 0}, "batch"),
        ({"batch": 10_001}, "batch"),
    ],
)
def test_bad_replay_input_fails_before_io(
    backend: Backend, prefix: str, kwargs: dict[str, Any], match: str
) -> None:
    queue = StreamQueue(backend.client(), prefix)
    with backend.counter() as seen, pytest.raises(ConfigurationError, match=match):
        queue.replay_dead_letters(**kwargs)
    assert seen.names == []


def test_bad_purge_input_and_reserved_fields_fail_before_io(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    with backend.counter() as seen:
        with pytest.raises(ConfigurationError, match="list of entry ids"):
            queue.purge_dead_letters("1-0")
        with pytest.raises(ConfigurationError, match="not a stream entry id"):
            queue.purge_dead_letters(["*"])
        with pytest.raises(ConfigurationError, match="batch"):
            queue.purge_dead_letters(batch=0)
        with pytest.raises(ConfigurationError, match="reserved"):
            queue.add({"_rp.replays": 3})
        with pytest.raises(ConfigurationError, match="count"):
            queue.pending_entries(0)
    assert seen.names == []


def test_pending_entries_list_holder_idle_time_and_deliveries(client: Any, prefix: str) -> None:
    queue = StreamQueue(client, prefix)
    ids = [queue.add({"n": n}) for n in range(3)]
    client.xreadgroup("workers", "a", {queue.key: ">"}, count=2)
    client.xreadgroup("workers", "b", {queue.key: ">"}, count=1)
    time.sleep(0.05)
    entries = queue.pending_entries()
    assert [(e.id, e.consumer, e.deliveries) for e in entries] == [
        (ids[0], "a", 1),
        (ids[1], "a", 1),
        (ids[2], "b", 1),
    ]
    assert all(e.idle >= 0.05 for e in entries)
    assert [e.id for e in queue.pending_entries(1)] == ids[:1]
    assert [e.id for e in queue.pending_entries(consumer="b")] == ids[2:]
    assert StreamQueue(client, prefix + "-missing").pending_entries() == []


# --- reaping by the worker -------------------------------------------------------------------


def test_worker_reaps_idle_empty_consumers_and_spares_holders(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    queue.add({"n": 1})
    client.xgroup_createconsumer(queue.key, "workers", "ghost")  # a crashed worker, empty
    time.sleep(0.6)
    client.xreadgroup("workers", "holder", {queue.key: ">"}, count=1)  # crashed holding one
    seen: list[StreamMessage] = []
    # Reaps consumers idle 1 s (2 x claim_idle), checking every 0.5 s.
    worker = Worker(queue, "live", seen.append, block=0.05, claim_idle=0.5, reap_idle=1.0)
    history: list[tuple[set[str], int]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        worker.run_once()
        info = queue.info()
        held = {c.name: c.pending for c in info.consumers}.get("holder", 0)
        history.append(({c.name for c in info.consumers}, held))
        if history[-1][0] == {"live"}:
            break
    assert history[-1][0] == {"live"}
    assert [m.data for m in seen] == [{"n": 1}]  # the holder's entry was reclaimed, not lost
    # The ghost went first; the holder only once its entry had been reclaimed from it.
    assert any(names == {"live", "holder"} for names, _ in history)
    gone = next(i for i, (names, _) in enumerate(history) if "holder" not in names)
    assert history[gone - 1][1] == 0
    assert worker.stats.reaped == 2
    assert queue.pending().count == 0


async def test_async_worker_reaps_idle_consumers(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    queue = AsyncStreamQueue(client, prefix)
    await queue.add({"n": 1})
    await client.xreadgroup("workers", "holder", {queue.key: ">"}, count=1)
    await client.xgroup_createconsumer(queue.key, "workers", "ghost")
    seen: list[StreamMessage] = []
    worker = AsyncWorker(queue, "live", seen.append, block=0.05, claim_idle=0.3, reap_idle=0.6)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await worker.run_once()
        if {c.name for c in (await queue.info()).consumers} == {"live"}:
            break
    assert {c.name for c in (await queue.info()).consumers} == {"live"}
    assert [m.data for m in seen] == [{"n": 1}]
    assert worker.stats.reaped == 2
    await client.aclose()


def test_reap_idle_is_at_least_twice_claim_idle(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), prefix)
    with backend.counter() as seen:
        with pytest.raises(ConfigurationError, match="reap_idle"):
            Worker(queue, "w", lambda m: None, reap_idle=0)
        with pytest.raises(ConfigurationError, match="reap_idle"):
            Worker(queue, "w", lambda m: None, reap_idle=float("nan"))
        slow = Worker(queue, "w", lambda m: None, claim_idle=600.0)  # the default 600 s is raised
        assert slow._core.reap_idle_ms == 1_200_000
        assert Worker(queue, "w", lambda m: None)._core.reap_idle_ms == 600_000
        assert Worker(queue, "w", lambda m: None, reap_idle=None)._core.reap_idle_ms is None
    assert seen.names == []
