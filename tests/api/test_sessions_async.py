"""AsyncSessionStore on real servers: the same plans through the asyncio runner."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from redis_patterns import AsyncSessionStore, ConfigurationError, SessionStore
from redis_patterns.testing.pytest_plugin import Backend


async def test_async_roundtrip_and_one_command_get(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix, idle_ttl=5, absolute_ttl=60)
    made = await store.create({"a": 1, "b": [True]}, user_id="alice")
    await store.get(made.id)
    with backend.counter() as seen:
        got = await store.get(made.id)
    assert seen.names == ["EVALSHA"]
    assert got is not None
    assert dict(got) == {"a": 1, "b": [True]}
    assert got.ttl == 5.0
    assert got.user_id == "alice"
    assert await store.update(made.id, {"c": 3}, delete=["a"]) is True
    assert await store.incr(made.id, "n", 2) == 2
    assert await store.delete_fields(made.id, "b") is True
    ttl = await store.ttl(made.id)
    assert ttl is not None
    assert 0 < ttl <= 5
    assert await store.sessions_of("alice") == [made.id]
    await client.aclose()


async def test_async_large_session_reads_its_fields_after_the_script(
    backend: Backend, prefix: str
) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix, idle_ttl=5, absolute_ttl=60)
    blob = "\u00e9" * 100_000  # 200 KB of UTF-8 once encoded: above the 64 KiB inline limit
    made = await store.create({"blob": blob, "n": 1}, user_id="bob")
    await store.get(made.id)
    with backend.counter() as seen:
        got = await store.get(made.id)
    assert seen.names == ["EVALSHA", "HGETALL"]
    assert got is not None
    assert dict(got) == {"blob": blob, "n": 1}
    assert got.user_id == "bob"
    assert got.ttl == 5.0
    assert await store.destroy(made.id) is True
    assert await store.get(made.id) is None
    await client.aclose()


async def test_async_idle_and_absolute_expiry(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    idle = AsyncSessionStore(client, namespace=prefix, idle_ttl=0.3)
    made = await idle.create({"a": 1})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # poll ttl(): unlike get() it does not slide
        if await idle.ttl(made.id) is None:
            break
        await asyncio.sleep(0.05)
    assert await idle.get(made.id) is None

    capped = AsyncSessionStore(client, namespace=prefix, idle_ttl=0.4, absolute_ttl=1.0)
    made = await capped.create({"a": 1})
    reads = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = await capped.get(made.id)
        if got is None:
            break
        assert got.idle_expires_at <= got.absolute_expires_at  # type: ignore[operator]
        reads += 1
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the session outlived its absolute lifetime")
    assert reads >= 3
    await client.aclose()


async def test_async_fifty_concurrent_incr(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    made = await store.create({"cart_count": 0})
    results = await asyncio.gather(*(store.incr(made.id, "cart_count") for _ in range(50)))
    assert sorted(r for r in results if r is not None) == list(range(1, 51))
    got = await store.get(made.id)
    assert got is not None
    assert got["cart_count"] == 50
    await asyncio.gather(*(store.update(made.id, {f"f{i}": i}) for i in range(20)))
    got = await store.get(made.id)
    assert got is not None
    assert {k: v for k, v in got.items() if k.startswith("f")} == {f"f{i}": i for i in range(20)}
    await client.aclose()


@pytest.mark.parametrize("user", [None, "bob"])
async def test_async_concurrent_rotate_one_winner(
    backend: Backend, prefix: str, user: str | None
) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    made = await store.create({"a": 1}, user_id="carol")
    results = await asyncio.gather(*(store.rotate(made.id, user_id=user) for _ in range(16)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get(made.id) is None
    got = await store.get(winners[0])
    assert got is not None
    assert got.user_id == user
    assert dict(got) == {"a": 1}
    await client.aclose()


@pytest.mark.fault
async def test_async_destroy_user_with_concurrent_creates(
    backend: Backend, prefix: str, scale: Any
) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    total = scale(40, 400)
    before = [(await store.create({}, user_id="dan")).id for _ in range(5)]

    async def destroyer() -> int:
        await asyncio.sleep(0)
        return await store.destroy_user("dan")

    created, destroyed = await asyncio.gather(
        asyncio.gather(*(store.create({"i": i}, user_id="dan") for i in range(total))),
        destroyer(),
    )
    ids = [s.id for s in created]
    alive = {sid for sid in ids if await store.get(sid) is not None}
    assert [await store.get(sid) for sid in before] == [None] * len(before)
    assert destroyed + len(alive) == total + len(before)
    assert set(await store.sessions_of("dan")) == alive
    assert await store.destroy_user("dan") == len(alive)
    await client.aclose()


async def test_async_destroy_and_logout(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    made = await store.create({"a": 1}, user_id="eve")
    assert await store.destroy(made.id) is True
    assert await store.sessions_of("eve") == []
    sync_check = backend.client()
    assert sync_check.exists(store._core._key_of(made.id)) == 0
    await client.aclose()


async def test_async_bad_input_before_io(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    await store.create()
    with backend.counter() as seen:
        with pytest.raises(ConfigurationError):
            await store.create({"x": object()})
        with pytest.raises(ConfigurationError):
            await store.destroy_user("")
        assert await store.get("not-an-id") is None
    assert seen.count == 0
    await client.aclose()


def test_clients_of_the_wrong_flavour_are_refused(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncSessionStore(backend.client())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SessionStore(backend.async_client())  # type: ignore[arg-type]


async def test_async_decode_responses_client_is_refused(backend: Backend, prefix: str) -> None:
    client = backend.async_client(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=True"):
        AsyncSessionStore(client, namespace=prefix)
    await client.aclose()
