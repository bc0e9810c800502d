"""The session store's keyspace after mixed workloads: every key expires, the index stays bounded
and never misses a live session (SCAN over every node, sync and async)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from redis_patterns import AsyncSessionStore, SessionStore
from redis_patterns._core.sessions_users import _PRUNE_EVERY
from redis_patterns.testing.pytest_plugin import Backend


class Awaiting:
    """A `SessionStore` behind an async face, so one workload drives both flavours."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


def check_keyspace(backend: Backend, store: SessionStore, *, bounded: bool) -> None:
    """Each session key expires; each index expires too when ``bounded`` (absolute_ttl set);
    every live session of a user is a member of that user's index."""
    client: Any = store.client
    for key in backend.scan(f"{{{store.namespace}:*"):
        pttl = client.pttl(key)
        assert pttl != -2 or not client.exists(key), key
        kind = key.split(b"}:", 1)[1][:2]
        assert kind in (b"s:", b"u:"), key
        if kind == b"s:" or bounded:
            assert pttl > 0 or pttl == -2, (key, pttl)  # -2: it expired since the SCAN
        if kind == b"s:":
            user = client.hget(key, ":u")
            if user is not None:
                bucket = key[1 : key.index(b"}")].rsplit(b":", 1)[1].decode()
                sid = f"{bucket}.{key.split(b'}:s:', 1)[1].decode()}"
                index = store._core.index_key(user.decode())
                assert client.zscore(index, sid) is not None, (sid, "missing from its index")


def stores(backend: Backend, prefix: str, api: str, **options: Any) -> tuple[Any, SessionStore]:
    """The store under test (async face either way) and a sync one for inspection."""
    inspect = SessionStore(backend.client(), namespace=prefix, **options)
    if api == "sync":
        return Awaiting(SessionStore(backend.client(), namespace=prefix, **options)), inspect
    return AsyncSessionStore(backend.async_client(), namespace=prefix, **options), inspect


async def close(store: Any) -> None:
    if isinstance(store, AsyncSessionStore):
        await store.client.aclose()


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_rotate_for_the_same_user_keeps_the_index_expiring(
    backend: Backend, prefix: str, api: str
) -> None:
    """Issue 13 (3): rotating a user's only session emptied the index (ZREM) and recreated it
    (ZADD) without a TTL, so every such index lived forever."""
    store, inspect = stores(backend, prefix, api, idle_ttl=60, absolute_ttl=600)
    made = await store.create({"a": 1}, user_id="alice")
    index = inspect._core.index_key("alice")
    assert 0 < inspect.client.pttl(index) <= 600_000
    rotated = await store.rotate(made.id)
    assert rotated is not None
    assert 0 < inspect.client.pttl(index) <= 600_000
    assert inspect.client.zrange(index, 0, -1) == [rotated.encode()]
    inspect.client.delete(index)  # an index lost under the session: rotation re-creates it
    again = await store.rotate(rotated)
    assert again is not None
    assert 0 < inspect.client.pttl(index) <= 600_000
    assert await store.sessions_of("alice") == [again]
    await close(store)


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("absolute_ttl", [600, None])
async def test_every_key_expires_after_each_step_of_a_mixed_workload(
    backend: Backend, prefix: str, api: str, absolute_ttl: float | None
) -> None:
    """With absolute_ttl, every key the store wrote has a TTL after every operation; without
    it, every session key does (an index may slide with its sessions). Either way no live
    session of a user is missing from the user's index."""
    store, inspect = stores(backend, prefix, api, idle_ttl=60, absolute_ttl=absolute_ttl)
    client = inspect.client
    bounded = absolute_ttl is not None
    steps = 0

    async def step(result: Any) -> Any:
        nonlocal steps
        steps += 1
        check_keyspace(backend, inspect, bounded=bounded)
        return result

    visitor = await step(await store.create({"cart": []}))
    first = await step(await store.create({"n": 0}, user_id="alice"))
    await step(await store.get(first.id))
    await step(await store.update(first.id, {"x": 1}, delete=["n"]))
    await step(await store.incr(first.id, "n"))
    only = await step(await store.rotate(first.id))  # alice's only session, same user
    second = await step(await store.create({}, user_id="alice"))
    both = await step(await store.rotate(only))  # same user, another member beside it
    login = await step(await store.rotate(visitor.id, user_id="alice"))  # anonymous -> user
    switched = await step(await store.rotate(second.id, user_id="bob"))  # user -> other user
    logged_out = await step(await store.rotate(switched, user_id=None))  # user -> anonymous
    await step(await store.get(login))
    await step(await store.delete_fields(login, "cart"))
    await step(await store.destroy(both))
    assert await step(await store.sessions_of("alice")) == [login]
    carol = [(await store.create({"i": i}, user_id="carol")).id for i in range(3)]
    await step(None)
    client.delete(inspect._core._key_of(carol[0]))  # as if it had idled out
    await step(await store.sessions_of("carol"))
    assert await step(await store.destroy_user("carol")) == 2
    assert await step(await store.destroy_user("alice")) == 1
    assert await step(await store.destroy(logged_out)) is True
    assert steps == 20
    assert backend.scan(f"{{{prefix}:*") == []
    await close(store)


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("absolute_ttl", [600, None])
async def test_index_stays_bounded_over_many_logins(
    backend: Backend, prefix: str, api: str, absolute_ttl: float | None
) -> None:
    """Logins are rotations (anonymous -> user). The ids of sessions that idled out must leave
    the index: they did on create, never on a login, so a user's index grew by one per login."""
    store, inspect = stores(backend, prefix, api, idle_ttl=60, absolute_ttl=absolute_ttl)
    client = inspect.client
    index = inspect._core.index_key("dave")
    logins = 3 * _PRUNE_EVERY + 5
    largest = 0
    for i in range(logins):
        visitor = await store.create({"i": i})
        sid = await store.rotate(visitor.id, user_id="dave")
        assert sid is not None
        client.delete(inspect._core._key_of(sid))  # the session idles out, as the server would
        largest = max(largest, client.zcard(index))
    assert largest <= _PRUNE_EVERY
    live = await store.create({}, user_id="dave")
    assert await store.sessions_of("dave") == [live.id]
    check_keyspace(backend, inspect, bounded=absolute_ttl is not None)
    await close(store)
