"""BoundedCounter on real servers: exact under concurrency, one command per incr."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from redis_patterns import AsyncBoundedCounter, BoundedCounter, ConfigurationError, ScriptError
from redis_patterns.testing.pytest_plugin import Backend


def test_incr_stops_at_limit(client: Any, prefix: str) -> None:
    counter = BoundedCounter(client, f"{prefix}:c", 5)
    assert [counter.incr(2), counter.incr(2), counter.incr(2), counter.incr(1)] == [2, 4, None, 5]
    assert counter.value() == 5
    assert counter.incr() is None
    counter.reset()
    assert counter.value() == 0


def test_limit_zero_refuses_everything(client: Any, prefix: str) -> None:
    counter = BoundedCounter(client, f"{prefix}:c", 0)
    assert counter.incr() is None
    assert client.exists(f"{prefix}:c") == 0


def test_sixteen_threads_never_overshoot(backend: Backend, prefix: str) -> None:
    counter = BoundedCounter(backend.client(), f"{prefix}:c", 100)
    successes: list[int] = []
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        for _ in range(20):
            if counter.incr() is not None:
                successes.append(1)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(successes) == 100
    assert counter.value() == 100


async def test_two_hundred_tasks_never_overshoot(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    counter = AsyncBoundedCounter(client, f"{prefix}:c", 100)
    results = await asyncio.gather(*(counter.incr() for _ in range(200)))
    assert sum(r is not None for r in results) == 100
    assert sorted(r for r in results if r is not None) == list(range(1, 101))
    assert await counter.value() == 100
    await client.aclose()


def test_one_command_per_incr(backend: Backend, prefix: str) -> None:
    counter = BoundedCounter(backend.client(), f"{prefix}:c", 3)
    counter.incr()  # the script is now cached: later calls take the EVALSHA path only
    with backend.counter() as seen:
        counter.incr()
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert counter.incr(5) is None
    assert seen.names == ["EVALSHA"]


async def test_async_one_command_per_incr(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    counter = AsyncBoundedCounter(client, f"{prefix}:c", 3)
    await counter.incr()
    with backend.counter() as seen:
        await counter.incr()
    assert seen.names == ["EVALSHA"]
    await client.aclose()


@pytest.mark.parametrize(
    ("key", "limit", "amount"),
    [
        ("k", -1, 1),
        ("k", 1.5, 1),
        ("k", True, 1),
        ("", 10, 1),
        (42, 10, 1),
        (None, 10, 1),
        ("k", 10, 0),
        ("k", 10, -3),
        ("k", 10, 2.0),
        ("k", 10, True),
        ("x" * 2000, 10, 1),
        ("a\x00b", 10, 1),
    ],
)
def test_bad_input_fails_before_any_io(backend: Backend, key: Any, limit: Any, amount: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        BoundedCounter(client, key, limit).incr(amount)
    assert seen.count == 0


def test_sync_client_refused_by_async_class(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncBoundedCounter(backend.client(), "k", 1)  # type: ignore[arg-type]


def test_non_integer_value_is_a_script_error(client: Any, prefix: str) -> None:
    client.set(f"{prefix}:c", "abc")
    with pytest.raises(ScriptError, match="does not hold an integer"):
        BoundedCounter(client, f"{prefix}:c", 10).incr()


def test_wrong_type_is_a_script_error(client: Any, prefix: str) -> None:
    client.hset(f"{prefix}:c", "f", "1")
    with pytest.raises(ScriptError, match="WRONGTYPE"):
        BoundedCounter(client, f"{prefix}:c", 10).incr()
