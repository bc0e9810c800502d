"""Session ids (RELIABILITY 21): 256 random bits from secrets; malformed ids never reach Redis."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from redis_patterns import AsyncSessionStore, SessionStore
from redis_patterns._core.sessions import new_session_id, parse_session_id
from redis_patterns.testing.pytest_plugin import Backend

MALFORMED: list[Any] = [
    "",
    None,
    b"bytes",
    42,
    True,
    ["list"],
    "x" * 10240,
    "abc",
    "abc." + "A" * 42,  # one short
    "abc." + "A" * 44,  # one long
    "ABC." + "A" * 43,  # bucket must be lower-case hex
    "xyz." + "A" * 43,
    "abc-" + "A" * 43,  # wrong separator
    "abc." + "!" * 43,  # wrong alphabet
    "abc." + "A" * 42 + "\n",
    "abc." + "A" * 42 + "é",
    "abc." + "A" * 42 + "\x00",
    "{ab." + "A" * 43,  # hash-tag injection
]


@pytest.mark.fault
def test_ids_have_256_random_bits_and_are_unique(scale: Any) -> None:
    count = scale(20_000, 1_000_000)
    ids = {new_session_id(None) for _ in range(count)}
    assert len(ids) == count
    sample = new_session_id("user")
    bucket, token = sample.split(".")
    assert re.fullmatch(r"[0-9a-f]{3}", bucket)
    assert len(token) == 43  # base64url of 32 bytes: 256 bits
    assert parse_session_id(sample) == (bucket, token)


@pytest.mark.fault
def test_forged_ids_are_rejected_or_unknown(client: Any, prefix: str, scale: Any) -> None:
    store = SessionStore(client, namespace=prefix)
    store.create({"a": 1})
    accepted = 0
    for _ in range(scale(1000, 10_000)):
        # well-formed forgeries: valid syntax, random content; none may name a session
        forged = f"{secrets.randbelow(4096):03x}.{secrets.token_urlsafe(32)}"
        if store.get(forged) is not None:
            accepted += 1
    assert accepted == 0


@pytest.mark.parametrize("sid", MALFORMED, ids=lambda s: repr(s)[:20])
def test_malformed_ids_never_touch_redis(backend: Backend, prefix: str, sid: Any) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    store.create()  # connect and warm up outside the counted block
    with backend.counter() as seen:
        assert store.get(sid) is None
        assert store.ttl(sid) is None
        assert store.update(sid, {"a": 1}) is False
        assert store.incr(sid, "n") is None
        assert store.delete_fields(sid, "a") is False
        assert store.rotate(sid) is None
        assert store.rotate(sid, user_id="mallory") is None
        assert store.destroy(sid) is False
    assert seen.count == 0


async def test_malformed_ids_never_touch_redis_async(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    await store.create()
    with backend.counter() as seen:
        for sid in MALFORMED:
            assert await store.get(sid) is None
            assert await store.update(sid, {"a": 1}) is False
            assert await store.incr(sid, "n") is None
            assert await store.rotate(sid) is None
            assert await store.destroy(sid) is False
    assert seen.count == 0
    await client.aclose()
