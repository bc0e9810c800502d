"""The proxy's four faults, each observed through the library against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
from _threaded import BOUND
from _threaded import call_bounded as _call_bounded
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_patterns
from redis_patterns import (
    AsyncBoundedCounter,
    BackendTimeoutError,
    BackendUnavailableError,
    BoundedCounter,
    EmbeddedServer,
)
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

LIMIT = 10**9


@pytest.fixture
def proxy(valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(valkey_server)


def test_pass_through_and_url(proxy: FaultProxy, prefix: str) -> None:
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}"
    with redis_patterns.connect(proxy.url) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert [counter.incr(), counter.incr()] == [1, 2]
    assert proxy.stats.connections >= 1
    assert proxy.mode == "pass"


def test_latency_beyond_socket_timeout_is_a_timeout(
    proxy: FaultProxy, valkey_server: EmbeddedServer, prefix: str
) -> None:
    with redis_patterns.connect(proxy.url, socket_timeout=0.3) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert counter.incr() == 1
        proxy.latency(1.0, requests=False)  # the server runs it at once; the reply comes late
        outcome = _call_bounded(counter.incr)
        assert isinstance(outcome, BackendTimeoutError)
        proxy.pass_through()
    with valkey_server.client() as direct:
        # Outcome unknown to the client, yet the increment did run: why timeouts mean "maybe".
        assert int(direct.get(f"{prefix}:c")) == 2


def test_latency_below_socket_timeout_is_only_slow(proxy: FaultProxy, prefix: str) -> None:
    proxy.latency(0.02, jitter=0.02)
    with redis_patterns.connect(proxy.url, socket_timeout=10) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert [counter.incr() for _ in range(5)] == [1, 2, 3, 4, 5]


def test_reset_is_unavailable(proxy: FaultProxy, prefix: str) -> None:
    with redis_patterns.connect(proxy.url, socket_timeout=5) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert counter.incr() == 1
        proxy.reset()  # RSTs the pooled connection, and every new one
        for _ in range(2):
            outcome = _call_bounded(counter.incr)
            assert isinstance(outcome, BackendUnavailableError)
            assert "reset by peer" in str(outcome)  # ECONNRESET: a real RST, not a FIN
        assert proxy.stats.resets >= 2
        proxy.pass_through()
        assert counter.incr() == 2  # the second and third call never reached the server


def test_blackhole_is_detected_by_the_socket_timeout(proxy: FaultProxy, prefix: str) -> None:
    with redis_patterns.connect(proxy.url, socket_timeout=0.3) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert counter.incr() == 1
        proxy.blackhole()
        # A half-open link: no error ever arrives, only the client's own timeout ends the call.
        assert isinstance(_call_bounded(counter.incr), BackendTimeoutError)
        # A connection opened during the blackhole hangs in its handshake: also a timeout.
        with redis_patterns.connect(proxy.url, socket_timeout=0.3) as fresh:
            outcome = _call_bounded(BoundedCounter(fresh, f"{prefix}:c", LIMIT).incr)
            assert isinstance(outcome, BackendTimeoutError)
        assert proxy.stats.blackholed >= 2


def test_reply_lost_after_execution(
    proxy: FaultProxy, valkey_server: EmbeddedServer, prefix: str
) -> None:
    with redis_patterns.connect(proxy.url, socket_timeout=5) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert counter.incr() == 1
        proxy.drop_replies()
        assert isinstance(_call_bounded(counter.incr), BackendUnavailableError)
        assert proxy.stats.dropped_replies == 1
        proxy.pass_through()
    with valkey_server.client() as direct:
        assert int(direct.get(f"{prefix}:c")) == 2  # it ran, though the client saw an error


async def test_async_faults_through_the_proxy(proxy: FaultProxy, prefix: str) -> None:
    client = redis_patterns.connect(proxy.url, asyncio=True, socket_timeout=0.3)
    try:
        counter = AsyncBoundedCounter(client, f"{prefix}:c", LIMIT)
        assert await counter.incr() == 1
        proxy.blackhole()
        with pytest.raises(BackendTimeoutError):
            await asyncio.wait_for(counter.incr(), BOUND)
        proxy.reset()
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(counter.incr(), BOUND)
        proxy.drop_replies(match="EVALSHA")  # not the new connection's handshake
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(counter.incr(), BOUND)
        proxy.pass_through()
        assert await counter.incr() == 3  # 1, the blackholed one (lost), the dropped one (ran)
    finally:
        await client.aclose()


def test_stop_ends_the_thread_and_closes_links(valkey_server: EmbeddedServer) -> None:
    proxy = FaultProxy(valkey_server).start()
    client = redis_patterns.connect(proxy.url, socket_timeout=5)
    assert client.ping()
    proxy.stop()
    assert not proxy.running
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()
    proxy.stop()  # idempotent


def _bare_client(proxy: FaultProxy) -> redis.Redis:
    # No retries and no handshake commands (RESP2, no CLIENT SETINFO): every request chunk the
    # proxy counts is one of the test's own commands.
    return redis.Redis(
        port=proxy.port, socket_timeout=5, retry=Retry(NoBackoff(), 0), driver_info=None, protocol=2
    )


def _incr_outcomes(client: redis.Redis, key: str, calls: int) -> list[str]:
    """Per INCR: ``ok``, ``reset`` (ECONNRESET: a real RST) or ``closed`` (ended by a FIN)."""
    outcomes = []
    for _ in range(calls):
        try:
            client.incr(key)
            outcomes.append("ok")
        except redis.ConnectionError as exc:  # the next call reconnects
            outcomes.append("reset" if "reset by peer" in str(exc) else "closed")
    client.close()
    return outcomes


def test_reset_every_nth_request_never_reaches_the_server(
    proxy: FaultProxy, valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy.reset(every=3)
    assert _incr_outcomes(_bare_client(proxy), f"{prefix}:n", 9) == ["ok", "ok", "reset"] * 3
    assert proxy.stats.resets == 3
    assert proxy.mode == "reset"
    with valkey_server.client() as direct:
        assert int(direct.get(f"{prefix}:n")) == 6  # the reset requests never ran


def test_drop_every_nth_reply_after_execution(
    proxy: FaultProxy, valkey_server: EmbeddedServer, prefix: str
) -> None:
    proxy.drop_replies(every=4)
    outcomes = _incr_outcomes(_bare_client(proxy), f"{prefix}:n", 8)
    assert outcomes == ["ok", "ok", "ok", "closed"] * 2
    assert proxy.stats.dropped_replies == 2
    with valkey_server.client() as direct:
        assert int(direct.get(f"{prefix}:n")) == 8  # the lost replies' requests did run


def test_every_is_validated(proxy: FaultProxy) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            proxy.reset(every=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="every"):
            proxy.drop_replies(every=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either"):
        proxy.drop_replies(0.5, every=2)
    assert proxy.mode == "pass"  # a rejected call leaves the mode alone


def test_reset_connections_is_a_one_off(proxy: FaultProxy, prefix: str) -> None:
    with redis_patterns.connect(proxy.url, socket_timeout=5) as client:
        counter = BoundedCounter(client, f"{prefix}:c", LIMIT)
        assert counter.incr() == 1
        proxy.reset_connections()
        assert proxy.stats.resets == 1
        assert proxy.mode == "pass"  # unlike reset(), new connections get through
        with redis_patterns.connect(proxy.url, socket_timeout=5) as fresh:
            assert BoundedCounter(fresh, f"{prefix}:c", LIMIT).incr() == 2
        assert proxy.stats.resets == 1
