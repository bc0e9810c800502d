"""A session's own idle lifetime and deadline (``idle_ttl`` / ``expires_in`` of create, update)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from redis_patterns import AsyncSessionStore, ConfigurationError, SessionStore
from redis_patterns.testing.pytest_plugin import Backend


def key_of(store: SessionStore | AsyncSessionStore, sid: str) -> bytes:
    return store._core._key_of(sid)


def test_own_idle_replaces_the_stores_on_every_read(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=60)
    short = store.create({"a": 1}, idle_ttl=5)
    key = key_of(store, short.id)
    assert short.ttl == 5.0
    assert 4000 < client.pttl(key) <= 5000
    got = store.get(short.id)
    assert got is not None
    assert got.ttl == 5.0  # a read slides by the session's own idle lifetime, not the store's
    assert 4000 < client.pttl(key) <= 5000
    # a longer one than the store's ("remember me")
    assert store.update(short.id, {}, idle_ttl=600) is True
    assert 590_000 < client.pttl(key) <= 600_000
    got = store.get(short.id)
    assert got is not None
    assert got.ttl == 600.0
    # None goes back to the store's
    assert store.update(short.id, {}, idle_ttl=None) is True
    assert 50_000 < client.pttl(key) <= 60_000
    got = store.get(short.id)
    assert got is not None
    assert got.ttl == 60.0


def test_own_deadline_caps_every_read_and_can_be_removed(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=60)
    made = store.create({"a": 1}, expires_in=8)
    key = key_of(store, made.id)
    assert made.absolute_expires_at is not None
    assert made.absolute_expires_at - made.created_at == pytest.approx(8, abs=0.01)
    for _ in range(3):
        got = store.get(made.id)
        assert got is not None
        assert got.ttl <= 8
        assert got.absolute_expires_at == made.absolute_expires_at
        assert 0 < client.pttl(key) <= 8000
    assert store.update(made.id, {"b": 2}, expires_in=None) is True
    got = store.get(made.id)
    assert got is not None
    assert got.absolute_expires_at is None
    assert got.ttl == 60.0
    assert dict(got) == {"a": 1, "b": 2}


def test_the_stores_absolute_lifetime_caps_both(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=10, absolute_ttl=30)
    made = store.create(idle_ttl=3600, expires_in=3600)
    key = key_of(store, made.id)
    assert made.ttl <= 30
    assert made.absolute_expires_at is not None
    assert made.absolute_expires_at - made.created_at == pytest.approx(30, abs=0.01)
    assert 20_000 < client.pttl(key) <= 30_000
    got = store.get(made.id)
    assert got is not None
    assert got.ttl <= 30


def test_a_deadline_ends_the_session_despite_reads(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=60)
    made = store.create({"a": 1})
    assert store.update(made.id, {}, expires_in=0.4) is True
    started = time.monotonic()
    while store.get(made.id) is not None:  # every read slides the idle lifetime, never the deadline
        assert time.monotonic() - started < 10, "the session outlived its deadline"
        time.sleep(0.05)
    assert client.exists(key_of(store, made.id)) == 0


@pytest.mark.parametrize("user", [None, "alice"])
def test_rotations_keep_the_sessions_own_expiry(
    backend: Backend, prefix: str, user: str | None
) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=60)
    made = store.create({"a": 1}, idle_ttl=5, expires_in=20)
    same = store.rotate(made.id)  # one script, same bucket
    assert same is not None
    assert 4000 < client.pttl(key_of(store, same)) <= 5000
    moved = store.rotate(same, user_id=user or "bob")  # take, then create in the user's bucket
    assert moved is not None
    got = store.get(moved)
    assert got is not None
    assert got.ttl == 5.0
    assert got.absolute_expires_at == made.absolute_expires_at
    assert 4000 < client.pttl(key_of(store, moved)) <= 5000


async def test_async_store_takes_the_same_options(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    try:
        store = AsyncSessionStore(client, namespace=prefix, idle_ttl=60)
        made = await store.create({"a": 1}, idle_ttl=5)
        assert made.ttl == 5.0
        assert await store.update(made.id, {}, expires_in=2) is True
        got = await store.get(made.id)
        assert got is not None
        assert got.ttl <= 2
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("create", {"idle_ttl": 0}),
        ("create", {"idle_ttl": -1}),
        ("create", {"expires_in": 0}),
        ("create", {"expires_in": float("nan")}),
        ("update", {"idle_ttl": "5"}),
        ("update", {"expires_in": -3}),
    ],
)
def test_bad_expiries_fail_before_any_io(
    backend: Backend, prefix: str, method: str, kwargs: dict[str, Any]
) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    sid = store.create().id
    args: tuple[Any, ...] = () if method == "create" else (sid, {})
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        getattr(store, method)(*args, **kwargs)
    assert seen.count == 0


def test_update_is_still_one_command(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    sid = store.create().id
    store.update(sid, {"warm": 1}, idle_ttl=30)
    with backend.counter() as seen:
        assert store.update(sid, {"x": 1}, delete=["warm"], idle_ttl=40, expires_in=50) is True
    assert seen.names == ["EVALSHA"]
