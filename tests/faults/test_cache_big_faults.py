"""A big value's store (one MULTI/EXEC block, tests/api/test_cache_big_values.py) whose link
fails: once the block was sent the outcome is unknown (`BackendTimeoutError`) and nothing is
sent again; a server that cannot be reached is `BackendUnavailableError` (nothing was sent)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redis_patterns import (
    AsyncCache,
    BackendTimeoutError,
    BackendUnavailableError,
    Cache,
    EmbeddedServer,
    connect,
)
from redis_patterns._core.cache_keys import BIG_VALUE_BYTES
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

BIG = "b" * (2 * BIG_VALUE_BYTES)


def test_a_lost_reply_of_the_block_is_outcome_unknown_and_not_resent(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1) as client:
        cache = Cache(client, prefix, 60)
        cache.set("k", BIG)  # scripts cached, connection open
        proxy.drop_replies(match="EXEC")
        with pytest.raises(BackendTimeoutError, match="outcome unknown"):
            cache.set("k", BIG + "lost")
        assert proxy.stats.matched_requests == 1  # sent once
        proxy.pass_through()
        # The proxy hangs up at the first reply bytes: at EXEC's, or already at MULTI's when
        # the block reached it in several chunks, and then the server never got EXEC. Either
        # way the block ran whole or not at all.
        assert cache.get("k") in (BIG, BIG + "lost")
        assert client.exists(cache._core.scratch_key(cache.key_of("k"))) == 0


async def test_async_lost_reply_of_the_block(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    client = connect(proxy.url, asyncio=True, max_connections=1)
    cache = AsyncCache(client, prefix, 60)
    await cache.set("k", BIG)
    proxy.drop_replies(match="EXEC")
    with pytest.raises(BackendTimeoutError):
        await cache.set("k", BIG + "lost")
    assert proxy.stats.matched_requests == 1
    proxy.pass_through()
    assert await cache.get("k") in (BIG, BIG + "lost")  # whole or not at all
    assert await client.exists(cache._core.scratch_key(cache.key_of("k"))) == 0
    await client.aclose()


def test_an_unreachable_server_is_unavailable(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url) as client:
        cache = Cache(client, prefix, 60)
        proxy.reset()  # every new connection refused with a RST before anything is sent
        with pytest.raises(BackendUnavailableError):
            cache.set("k", BIG)
        proxy.pass_through()
    with connect(valkey_server.url) as direct:
        assert Cache(direct, prefix, 60).get("k") is None
