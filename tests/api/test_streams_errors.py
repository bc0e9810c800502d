"""Queue data the queue did not write: a key of another type and a foreign dead letter raise
`QueueError`, still the `BackendError` / `ScriptError` they used to be (issue 15)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_patterns import (
    AsyncStreamQueue,
    AsyncWorker,
    BackendError,
    QueueError,
    ScriptError,
    StreamQueue,
    Worker,
)
from redis_patterns.testing.pytest_plugin import Backend


@pytest.fixture(autouse=True)
def _delete_the_queue(backend: Backend, prefix: str) -> Iterator[None]:
    """Every test leaves keys the queue did not write: delete them, or what lists every queue
    of the shared servers (the dashboard and its tests) would meet them."""
    yield
    StreamQueue(backend.client(), prefix).delete()  # DEL: whatever type the keys hold


def test_a_stream_key_of_another_type_raises_queue_error(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    client.set(queue.key, "not a stream")
    with pytest.raises(QueueError, match="WRONGTYPE") as raised:
        queue.add({"n": 1})
    assert isinstance(raised.value, ScriptError)  # what it was before: a script refused
    assert isinstance(raised.value.__cause__, ScriptError)
    assert prefix in str(raised.value)
    commands: list[Callable[[], object]] = [
        queue.pending,
        queue.ensure_group,
        lambda: list(queue.replay()),
    ]
    for call in commands:
        with pytest.raises(QueueError, match="WRONGTYPE") as raised:
            call()
        assert isinstance(raised.value, BackendError)
        assert not isinstance(raised.value, ScriptError)  # a plain command, as before
    scripts: list[Callable[[], object]] = [queue.pending_entries, queue.reap]
    for call in scripts:
        with pytest.raises(QueueError, match="WRONGTYPE") as raised:
            call()
        assert isinstance(raised.value, ScriptError)
    assert client.get(queue.key) == b"not a stream"  # nothing was changed


def test_a_dead_letter_key_of_another_type_raises_queue_error(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    queue.add({"n": 1})
    client.set(queue.dead_key, "not a stream")
    for call in (queue.dead_letters, queue.purge_dead_letters, queue.info):
        with pytest.raises(QueueError, match="WRONGTYPE"):
            call()
    with pytest.raises(QueueError, match="WRONGTYPE"):
        queue.replay_dead_letters()


def test_a_worker_stops_on_a_key_of_another_type_instead_of_retrying(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    client.set(queue.key, "not a stream")
    worker = Worker(queue, "w", print, block=0.05)
    with pytest.raises(QueueError, match="WRONGTYPE"):
        worker.run()
    with pytest.raises(QueueError, match="WRONGTYPE"):
        worker.run_once()


async def test_async_queue_and_worker_raise_queue_error(async_client: Any, prefix: str) -> None:
    client = async_client
    queue = AsyncStreamQueue(client, prefix)
    await client.set(queue.key, "not a stream")
    with pytest.raises(QueueError, match="WRONGTYPE"):
        await queue.add({"n": 1})
    with pytest.raises(QueueError, match="WRONGTYPE"):
        await AsyncWorker(queue, "w", print, block=0.05).run()


def test_a_dead_letter_the_queue_did_not_write_raises_queue_error_naming_it(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    foreign = client.xadd(queue.dead_key, {"note": "added by hand"}).decode()
    with pytest.raises(QueueError, match=foreign) as raised:
        queue.dead_letters()
    assert not isinstance(raised.value, BackendError)
    assert "lacks ['id', 'group', 'consumer', 'deliveries', 'error']" in str(raised.value)
    assert queue.purge_dead_letters([foreign]) == 1  # what the message suggests
    assert queue.dead_letters() == []
