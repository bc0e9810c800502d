"""``wait_replicas`` on Lock, SessionStore and WriteBehind: WAIT pipelined with the script.

With the option on, a created or destroyed session, and a queued write-behind entry, are
acknowledged only once a replica confirmed them; the WAIT rides in the same round trip as the
script, on its connection (one request through a proxy). A paused replica makes the call raise
`NotReplicatedError` instead of acknowledging a write a failover could lose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_patterns import (
    AsyncSessionStore,
    Cache,
    ConfigurationError,
    EmbeddedCluster,
    EmbeddedServer,
    Lock,
    NotReplicatedError,
    SessionStore,
    WriteBehind,
    connect,
)
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.counter import CommandCounter

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """A primary and its replica, in sync."""
    with (
        EmbeddedServer(config={"repl-diskless-sync-delay": 0}) as primary,
        EmbeddedServer(config={"replicaof": f"127.0.0.1 {primary.port}"}) as replica,
    ):
        with primary.client() as client:
            assert client.wait(1, 10_000) == 1
        yield primary, replica


def _one_round_trip(primary: EmbeddedServer, call: Callable[[Any], object]) -> list[str]:
    """Run ``call(client)`` through a proxy; returns the commands the primary saw."""
    with FaultProxy(primary) as proxy:
        client = connect(proxy.url)
        call(client)  # scripts loaded, connection open
        before = proxy.stats.forwarded_requests
        with CommandCounter([("127.0.0.1", primary.port or 0)]) as seen:
            call(client)
        assert proxy.stats.forwarded_requests - before == 1  # one round trip
        client.close()
        return seen.names


def test_sessions_wait_in_the_same_round_trip(pair: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    primary, _ = pair
    names = _one_round_trip(
        primary, lambda c: SessionStore(c, "w", wait_replicas=1).create({"a": 1}, user_id="u")
    )
    assert names == ["EVALSHA", "WAIT"]
    with primary.client() as client:
        store = SessionStore(client, "w", wait_replicas=1)
        session = store.create({"a": 1}, user_id="u")
        assert store.destroy(session.id)


def test_write_behind_waits_in_the_same_round_trip(
    pair: tuple[EmbeddedServer, EmbeddedServer],
) -> None:
    primary, _ = pair

    def write(client: Any) -> object:
        return WriteBehind(Cache(client, "wb"), lambda b: None, wait_replicas=1).write("k", 1)

    names = _one_round_trip(primary, write)
    assert names == ["EVALSHA", "WAIT"]


def test_lock_waits_in_the_same_round_trip(pair: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    primary, _ = pair

    def take(client: Any) -> None:
        lock = Lock(client, "w", ttl=3, wait_replicas=1)
        assert lock.acquire(blocking=False)
        lock.release()

    with FaultProxy(primary) as proxy:
        client = connect(proxy.url)
        take(client)
        lock = Lock(client, "w", ttl=3, wait_replicas=1)
        before = proxy.stats.forwarded_requests
        with CommandCounter([("127.0.0.1", primary.port or 0)]) as seen:
            assert lock.acquire(blocking=False)
        assert proxy.stats.forwarded_requests - before == 1  # one round trip
        assert seen.names == ["EVALSHA", "WAIT"]
        lock.release()
        client.close()


def test_without_the_option_there_is_no_wait(pair: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    primary, _ = pair
    assert _one_round_trip(primary, lambda c: SessionStore(c, "w").create({})) == ["EVALSHA"]


def test_an_unconfirmed_write_raises(pair: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    primary, replica = pair
    with primary.client() as client:
        store = SessionStore(client, "w", wait_replicas=1)
        behind = WriteBehind(Cache(client, "wb"), lambda b: None, wait_replicas=1)
        kept = store.create({}, user_id="u")
        replica.pause()  # it confirms nothing: a failover now would lose what follows
        try:
            with pytest.raises(NotReplicatedError) as caught:
                store.create({}, user_id="u")
            assert (caught.value.confirmed, caught.value.wanted) == (0, 1)
            with pytest.raises(NotReplicatedError):
                store.destroy(kept.id)  # the logout is on the primary, not confirmed
            with pytest.raises(NotReplicatedError):
                behind.write("k", 2)
        finally:
            replica.resume()
        assert store.get(kept.id) is None  # applied on the primary all the same


def test_a_flushed_script_is_loaded_and_still_waited_for(
    pair: tuple[EmbeddedServer, EmbeddedServer],
) -> None:
    primary, _ = pair
    with primary.client() as client:
        store = SessionStore(client, "w", wait_replicas=1)
        store.create({})
        client.script_flush()
        with CommandCounter([("127.0.0.1", primary.port or 0)]) as seen:
            store.create({})
        # WAIT again after the EVAL that ran: the first WAIT followed a write that did not.
        assert seen.names == ["EVALSHA", "WAIT", "EVAL", "WAIT"]


async def test_async_sessions_wait(pair: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    primary, replica = pair
    client = primary.client(asyncio=True)
    store = AsyncSessionStore(client, "w", wait_replicas=1)
    assert (await store.create({"a": 1})).id
    replica.pause()
    try:
        with pytest.raises(NotReplicatedError):
            await store.create({})
    finally:
        replica.resume()
    await client.aclose()


def test_a_cluster_client_is_refused_before_io(cluster: EmbeddedCluster) -> None:
    client = cluster.client()
    with pytest.raises(ConfigurationError, match="standalone or Sentinel"):
        SessionStore(client, "w", wait_replicas=1)
    with pytest.raises(ConfigurationError, match="standalone or Sentinel"):
        WriteBehind(Cache(client, "wb"), lambda b: None, wait_replicas=1)
    with pytest.raises(ConfigurationError, match="standalone or Sentinel"):
        Lock(client, "w", wait_replicas=1)
    with pytest.raises(ConfigurationError):
        SessionStore(client, "w", wait_replicas=-1)
    client.close()
