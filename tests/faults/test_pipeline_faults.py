"""A pipelined call (a cache hit's ``MGET`` + ``TIME``) whose link fails mid-reply: the call is
`BackendUnavailableError`, nothing is re-sent, and the pool's next call works. A connection whose
replies were not all read never serves another call (checked with one-connection pools)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from _threaded import BOUND, Threaded

from redis_patterns import (
    AsyncCache,
    BackendUnavailableError,
    Cache,
    EmbeddedServer,
    autopipeline,
    connect,
)
from redis_patterns._plan import Command, Gather, Pipeline
from redis_patterns._redis import Invoke
from redis_patterns._redis_steps import exchange_steps
from redis_patterns._runner import AsyncRunner, SyncRunner
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

# No handshake commands on a new connection: every request chunk a proxy counts is a call's.
BARE: dict[str, Any] = {"driver_info": None, "protocol": 2}


def _reset_while_in_flight(proxy: FaultProxy, fn: Callable[[], Any]) -> Any:
    """``fn``'s outcome when the proxy resets its link while the replies are on their way: the
    server ran the request, the proxy holds the replies back, then sends a RST."""
    proxy.latency(2.0, requests=False)
    call = Threaded(fn)
    time.sleep(0.5)
    proxy.reset_connections()
    proxy.pass_through()
    return call.outcome()


def test_hit_reset_mid_reply(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1, **BARE) as client:
        cache = Cache(client, prefix, 60)
        cache.set("k", {"v": 1})
        cache.set("other", {"v": 2})
        assert cache.get("k") == {"v": 1}
        outcome = _reset_while_in_flight(proxy, lambda: cache.get("k"))
        assert isinstance(outcome, BackendUnavailableError)
        assert "reset by peer" in str(outcome)
        before = proxy.stats.forwarded_requests
        # The pool's one connection was closed, not handed back with the lost replies unread.
        assert cache.get("other") == {"v": 2}
        assert cache.get_or_load("k", dict) == {"v": 1}
        assert proxy.stats.forwarded_requests - before == 2  # nothing was re-sent


def test_reset_after_the_first_reply_was_read(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    """The first reply comes at once, the second only after BLPOP's timeout: the RST meets a
    pipeline half read."""
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1, socket_timeout=10) as client:
        client.set(f"{prefix}:a", "1")
        runner = SyncRunner(client)
        effect = Pipeline(
            (Command(("GET", f"{prefix}:a")), Command(("BLPOP", f"{prefix}:none", 3)))
        )
        call = Threaded(lambda: runner.perform(effect))
        time.sleep(0.5)
        proxy.reset_connections()
        assert isinstance(call.outcome(), BackendUnavailableError)
        reads = Pipeline((Command(("GET", f"{prefix}:a")), Command(("PING",))))
        assert runner.perform(reads) == [b"1", True]  # not the lost BLPOP's nil


def test_hit_reply_lost_is_unavailable_and_not_resent(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, max_connections=1) as client:
        cache = Cache(client, prefix, 60)
        cache.set("k", {"v": 1})
        proxy.drop_replies(match="MGET")
        with pytest.raises(BackendUnavailableError):
            cache.get("k")
        assert proxy.stats.matched_requests == 1  # sent once
        proxy.pass_through()
        assert cache.get("k") == {"v": 1}


def test_a_failure_between_two_reads_closes_the_connection(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """A response callback that raises leaves the next reply unread: that connection is closed
    (redis-py's own Pipeline would hand it back to the pool as it is)."""
    with connect(valkey_server.url, max_connections=1) as client:
        client.mset({f"{prefix}:a": "1", f"{prefix}:b": "2"})
        runner = SyncRunner(client)

        def broken(response: Any, **options: Any) -> Any:
            raise ValueError("a callback failed")

        client.set_response_callback("GET", broken)
        effect = Pipeline((Command(("GET", f"{prefix}:a")), Command(("ECHO", "late"))))
        with pytest.raises(ValueError, match="callback failed"):
            runner.perform(effect)
        client.response_callbacks.pop("GET")
        assert runner.perform(Pipeline((Command(("GET", f"{prefix}:b")),))) == [b"2"]


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_async_hit_reset_mid_reply(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    prefix: str,
    batching: bool,
) -> None:
    proxy = fault_proxy(valkey_server)
    client = connect(proxy.url, asyncio=True, max_connections=1, **BARE)
    try:
        autopipeline(client, batching)
        cache = AsyncCache(client, prefix, 60)
        await cache.set("k", {"v": 1})
        await cache.set("other", {"v": 2})
        proxy.latency(2.0, requests=False)
        hit = asyncio.ensure_future(cache.get("k"))
        await asyncio.sleep(0.5)
        proxy.reset_connections()
        proxy.pass_through()
        with pytest.raises(BackendUnavailableError, match="reset by peer"):
            await asyncio.wait_for(hit, BOUND)
        before = proxy.stats.forwarded_requests
        assert await cache.get("other") == {"v": 2}
        assert proxy.stats.forwarded_requests - before == 1
    finally:
        await client.aclose()


async def test_async_cancelled_mid_pipeline_leaves_a_clean_pool(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """A task cancelled while its pipeline's replies are unread: its connection is closed, the
    one-connection pool lends it again for the next call (no stale reply, no leak)."""
    client = connect(valkey_server.url, asyncio=True, max_connections=1)
    try:
        await client.set(f"{prefix}:a", "1")
        runner = AsyncRunner(client)
        effect = Pipeline(
            (Command(("GET", f"{prefix}:a")), Command(("BLPOP", f"{prefix}:none", 2)))
        )
        task = asyncio.ensure_future(runner.perform(effect))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reads = Pipeline((Command(("GET", f"{prefix}:a")), Command(("PING",))))
        assert await runner.perform(reads) == [b"1", True]
    finally:
        await client.aclose()


def _made(step: Invoke | Gather) -> Any:
    assert isinstance(step, Invoke)
    return step.func(*step.args)


def test_an_exchange_is_one_step_that_no_runner_stops_mid_flight(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """The whole exchange (a connection taken, the write, every reply read, the connection
    back) is one step: steps closed before it ran took nothing from the pool, and no runner can
    stop between the write and the reads and leave replies unread on a pooled connection."""
    with connect(valkey_server.url, max_connections=1) as client:
        client.mset({f"{prefix}:a": "1", f"{prefix}:b": "2"})
        runner = SyncRunner(client)
        steps = exchange_steps(client, [("GET", f"{prefix}:a"), ("GET", f"{prefix}:a")])
        next(steps)
        steps.close()  # before its step ran: the pool's one connection was never taken
        assert runner.perform(Pipeline((Command(("GET", f"{prefix}:b")),))) == [b"2"]
        steps = exchange_steps(client, [("GET", f"{prefix}:a"), ("ECHO", "late")])
        with pytest.raises(StopIteration) as done:
            steps.send(_made(next(steps)))  # one step, then the replies
        assert done.value.value == [b"1", b"late"]
        assert runner.perform(Pipeline((Command(("GET", f"{prefix}:b")),))) == [b"2"]
