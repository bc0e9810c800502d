"""A big session write (one MULTI/EXEC block, tests/api/test_sessions_big_writes.py) whose link
fails: once the block was sent the outcome is unknown (`BackendTimeoutError`) and nothing is
sent again; whatever ran, no session is resurrected and no key is left without a TTL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redis_patterns import (
    AsyncSessionStore,
    BackendTimeoutError,
    BackendUnavailableError,
    EmbeddedServer,
    SessionStore,
    connect,
)
from redis_patterns._core.sessions_keys import BIG_WRITE_BYTES
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

BIG = "b" * (2 * BIG_WRITE_BYTES)
EVAL = b"$4\r\nEVAL\r\n"  # the block sent again after NOSCRIPT (the first has EVALSHA)


def test_a_lost_reply_of_the_block_is_outcome_unknown_and_not_resent(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1) as client:
        store = SessionStore(client, prefix, 60)
        sid = store.create({"a": 1}).id
        store.update(sid, {"a": BIG})  # scripts cached, connection open
        proxy.drop_replies(match="EXEC")
        with pytest.raises(BackendTimeoutError, match="outcome unknown"):
            store.update(sid, {"a": BIG + "lost"}, delete=["x"])
        assert proxy.stats.matched_requests == 1  # sent once
        proxy.pass_through()
        session = store.get(sid)
        assert session is not None
        assert session["a"] in (BIG, BIG + "lost")  # whole or not at all
        assert 0 < client.pttl(store._core._key_of(sid)) <= 60_000


@pytest.mark.parametrize("live", [True, False])
def test_a_lost_reply_of_the_block_sent_again(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    prefix: str,
    live: bool,
) -> None:
    """The commit met NOSCRIPT, the block went again as EVAL and its reply was lost: outcome
    unknown, no third send; an ended session stays ended, nothing is left behind."""
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1) as client:
        store = SessionStore(client, prefix, 60)
        sid = store.create({"a": 1}).id
        key = store._core._key_of(sid)
        store.update(sid, {"a": BIG})
        if not live:
            store.destroy(sid)
        client.script_flush()
        proxy.drop_replies(match=EVAL)
        with pytest.raises(BackendTimeoutError, match="outcome unknown"):
            store.update(sid, {"a": BIG + "again"})
        assert proxy.stats.matched_requests == 1
        proxy.pass_through()
        if live:
            session = store.get(sid)
            assert session is not None
            assert session["a"] == BIG + "again"
            assert 0 < client.pttl(key) <= 60_000
        else:
            assert client.exists(key) == 0  # the second run's commit deleted the HSET's hash
            assert store.get(sid) is None


async def test_async_lost_reply_of_the_block(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    client = connect(proxy.url, asyncio=True, max_connections=1)
    store = AsyncSessionStore(client, prefix, 60)
    sid = (await store.create({"a": 1})).id
    await store.update(sid, {"a": BIG})
    await store.destroy(sid)
    proxy.drop_replies(match="EXEC")
    with pytest.raises(BackendTimeoutError):
        await store.update(sid, {"a": BIG + "lost"})
    assert proxy.stats.matched_requests == 1
    proxy.pass_through()
    assert await store.get(sid) is None
    assert await client.exists(store._core._key_of(sid)) == 0  # whole or not at all
    await client.aclose()


def test_an_unreachable_server_is_unavailable(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url) as client:
        store = SessionStore(client, prefix, 60)
        sid = store.create({"a": 1}).id
        proxy.reset()  # every new connection refused with a RST before anything is sent
        client.connection_pool.disconnect()
        with pytest.raises(BackendUnavailableError):
            store.update(sid, {"a": BIG})
        proxy.pass_through()
    with connect(valkey_server.url) as direct:
        session = SessionStore(direct, prefix, 60).get(sid)
        assert session is not None
        assert session["a"] == 1
