"""An asyncio pipeline's replies are read under one timer, not one per reply: a reply that
stalls past ``socket_timeout`` still times the call out (`BackendTimeoutError`, the connection
closed), replies that each come within it of the previous never do, and a batch of concurrent
hits arms none of redis-py's per-read timers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio.connection

from redis_patterns import AsyncCache, BackendTimeoutError, EmbeddedServer, connect
from redis_patterns._plan import Command, Pipeline
from redis_patterns._redis_steps import _ONE_TIMER
from redis_patterns._runner import AsyncRunner

pytestmark = pytest.mark.fault


async def test_a_stalled_later_reply_times_out_and_closes_the_connection(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """The second reply (a BLPOP blocking 3 s) never comes within the 0.5 s socket timeout."""
    client = connect(valkey_server.url, asyncio=True, max_connections=1, socket_timeout=0.5)
    try:
        await client.set(f"{prefix}:a", "1")
        runner = AsyncRunner(client)
        stalled = Pipeline(
            (Command(("GET", f"{prefix}:a")), Command(("BLPOP", f"{prefix}:none", 3)))
        )
        began = time.monotonic()
        with pytest.raises(BackendTimeoutError):
            await runner.perform(stalled)
        waited = time.monotonic() - began
        # timed out by the socket timeout (to 1.25 times it), not by the BLPOP's own 3 s
        assert 0.45 <= waited < 2.5, waited
        # the one connection was closed, not lent again with the BLPOP's reply unread
        reads = Pipeline((Command(("GET", f"{prefix}:a")), Command(("PING",))))
        assert await runner.perform(reads) == [b"1", True]
    finally:
        await client.aclose()


async def test_each_reply_within_the_timeout_of_the_previous_never_times_out(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """Three BLPOPs of 0.4 s in one write: the last reply comes 1.2 s after the write, past one
    socket timeout of 1 s, yet each comes 0.4 s after the one before, as redis-py's per-read
    timeout allows."""
    client = connect(valkey_server.url, asyncio=True, max_connections=1, socket_timeout=1.0)
    try:
        await client.set(f"{prefix}:a", "1")
        runner = AsyncRunner(client)
        slow = Pipeline(
            (
                *(Command(("BLPOP", f"{prefix}:none{i}", 0.4)) for i in range(3)),
                Command(("GET", f"{prefix}:a")),
            )
        )
        began = time.monotonic()
        assert await runner.perform(slow) == [None, None, None, b"1"]
        assert time.monotonic() - began >= 1.2
    finally:
        await client.aclose()


@pytest.mark.skipif(not _ONE_TIMER, reason="needs redis-py >= 8.1 and Python >= 3.11.3")
async def test_a_batch_of_hits_arms_no_per_read_timer(
    valkey_server: EmbeddedServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 concurrent cache hits are one batch of 100 replies (MGET and TIME each): read under
    the batch's one timer, none through redis-py's per-read `async_timeout`."""
    client = connect(valkey_server.url, asyncio=True, socket_timeout=5)
    try:
        cache = AsyncCache(client, prefix, 60)
        await cache.set("k", {"v": 1})
        armed: list[Any] = []
        per_read = vars(redis.asyncio.connection)["async_timeout"]  # not in its __all__

        def counting(*args: Any) -> Any:
            armed.append(args)
            return per_read(*args)

        monkeypatch.setattr(redis.asyncio.connection, "async_timeout", counting)
        assert await asyncio.gather(*(cache.get("k") for _ in range(50))) == [{"v": 1}] * 50
        assert armed == []
        # a lone command still reads through redis-py's own timed read
        assert await client.get(f"{prefix}:absent") is None
        assert len(armed) == 1
    finally:
        await client.aclose()
