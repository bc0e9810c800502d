"""No hang and no double application by default (issue 13, item 5).

`connect()`, `EmbeddedServer.client()` and `EmbeddedCluster.client()` build clients with finite
timeouts that never re-send a command; a pattern given any other client warns once for it.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable

import flask
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_patterns
from redis_patterns import (
    AsyncBoundedCounter,
    AsyncFixedWindow,
    BackendTimeoutError,
    BackendUnavailableError,
    BoundedCounter,
    EmbeddedCluster,
    EmbeddedServer,
    FixedWindow,
    Leaderboard,
    RedisPatternsWarning,
    Script,
)
from redis_patterns._server import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT
from redis_patterns.integrations.ratelimit_flask import rate_limit
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

LIMIT = 10**9
DROP = 0.10


# --- finite, documented timeouts ----------------------------------------------------------------


def _pool_timeouts(client: redis.Redis | redis.asyncio.Redis) -> tuple[object, object]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("socket_timeout"), kwargs.get("socket_connect_timeout")


async def test_connect_gives_finite_documented_timeouts(valkey_server: EmbeddedServer) -> None:
    assert (DEFAULT_SOCKET_TIMEOUT, DEFAULT_CONNECT_TIMEOUT) == (3.0, 2.0)  # as documented
    with redis_patterns.connect(valkey_server.url) as client:
        assert _pool_timeouts(client) == (3.0, 2.0)
        assert client.ping()
        connection = client.connection_pool.get_connection()  # the socket really has them
        try:
            assert (connection.socket_timeout, connection.socket_connect_timeout) == (3.0, 2.0)
        finally:
            client.connection_pool.release(connection)
    async_client = redis_patterns.connect(valkey_server.url, asyncio=True)
    try:
        assert _pool_timeouts(async_client) == (3.0, 2.0)
        assert await async_client.ping()
    finally:
        await async_client.aclose()
    # Overridable by keyword.
    with redis_patterns.connect(valkey_server.url, socket_timeout=7, socket_connect_timeout=1) as c:
        assert _pool_timeouts(c) == (7, 1)


def test_embedded_clients_have_the_same_defaults(
    valkey_server: EmbeddedServer, cluster: EmbeddedCluster
) -> None:
    with valkey_server.client() as client:
        assert _pool_timeouts(client) == (3.0, 2.0)
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() == 0
    with cluster.client() as cluster_client:
        kwargs = cluster_client.nodes_manager.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (3.0, 2.0)
        assert cluster_client.retry.get_retries() == 0


@pytest.mark.timeout(60)
def test_paused_server_fails_open_instead_of_hanging(
    server_factory: Callable[..., EmbeddedServer],
) -> None:
    """SIGSTOP the server: the Flask decorator's fail_open serves the view once the call times
    out (about socket_timeout), instead of holding the request as long as the pause lasts."""
    server = server_factory()
    client = redis_patterns.connect(server.url)
    limiter = FixedWindow(client, 100, 60.0)
    app = flask.Flask(__name__)

    @app.get("/")
    @rate_limit(limiter, key=lambda: "user", fail_open=True)
    def index() -> str:
        return "served"

    web = app.test_client()
    assert web.get("/").headers["RateLimit-Remaining"] == "99"
    server.pause()
    try:
        response = web.get("/")  # the pause outlasts the test: only the timeout can end this
        assert response.status_code == 200
        assert response.get_data(as_text=True) == "served"
        assert "RateLimit-Remaining" not in response.headers  # not counted: failed open
        with pytest.raises(BackendTimeoutError):
            limiter.hit("user")
    finally:
        server.resume()
    # Served again once resumed (the timed-out calls may have run meanwhile: outcome unknown).
    assert limiter.hit("user").allowed
    client.close()


@pytest.mark.timeout(60)
async def test_async_paused_server_times_out_instead_of_hanging(
    server_factory: Callable[..., EmbeddedServer],
) -> None:
    server = server_factory()
    client = redis_patterns.connect(server.url, asyncio=True)
    try:
        limiter = AsyncFixedWindow(client, 100, 60.0)
        assert (await limiter.hit("user")).allowed
        server.pause()
        try:
            with pytest.raises(BackendTimeoutError):
                await limiter.hit("user")
        finally:
            server.resume()
    finally:
        await client.aclose()


# --- one warning per risky client ---------------------------------------------------------------


def _caught(build: Callable[[], object]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w for w in caught if issubclass(w.category, RedisPatternsWarning)]


def test_one_warning_per_retrying_client_pointing_at_the_caller(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    stock = redis.Redis(host="127.0.0.1", port=valkey_server.port or 0)  # default Retry
    other = redis.Redis(host="127.0.0.1", port=valkey_server.port or 0)
    script = Script("return 1")

    def build() -> None:
        BoundedCounter(stock, f"{prefix}:a", 5)
        FixedWindow(stock, 5, 1.0)
        Leaderboard(stock, f"{prefix}:b")
        for _ in range(3):
            assert script(stock) == 1  # a runner per call: still one warning
        BoundedCounter(other, f"{prefix}:c", 5)

    caught = _caught(build)
    assert len(caught) == 2  # one for each client
    message = str(caught[0].message)
    assert "re-sends a command" in message
    assert "up to 10 times" in message
    assert "applied twice" in message
    assert "about 55 s" in message
    assert "retry=Retry(NoBackoff(), 0)" in message
    assert "connect(url)" in message
    assert caught[0].filename == __file__  # the user's line, not the library's
    assert _caught(lambda: BoundedCounter(stock, f"{prefix}:d", 5)) == []  # already warned
    stock.close()
    other.close()


def test_no_socket_timeout_is_warned_about(valkey_server: EmbeddedServer, prefix: str) -> None:
    hanging = redis.Redis(
        host="127.0.0.1",
        port=valkey_server.port or 0,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
    )
    (warning,) = _caught(lambda: BoundedCounter(hanging, f"{prefix}:a", 5))
    message = str(warning.message)
    assert "no socket_timeout" in message
    assert "blocks forever" in message
    assert "socket_timeout=3" in message
    assert "re-sends" not in message
    hanging.close()


async def test_async_and_cluster_clients_are_checked_too(
    valkey_server: EmbeddedServer, cluster: EmbeddedCluster, prefix: str
) -> None:
    port = valkey_server.port or 0
    stock_async = redis.asyncio.Redis(host="127.0.0.1", port=port)
    nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes]
    stock_async_cluster = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes)
    sync_nodes = [redis.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes]
    stock_cluster = redis.cluster.RedisCluster(startup_nodes=sync_nodes)
    for client in (stock_async, stock_async_cluster):
        (warning,) = _caught(lambda c=client: AsyncBoundedCounter(c, f"{prefix}:a", 5))  # type: ignore[misc]
        assert "applied twice" in str(warning.message)
    (warning,) = _caught(lambda: BoundedCounter(stock_cluster, f"{prefix}:a", 5))
    assert "redis.cluster.RedisCluster client" in str(warning.message)
    await stock_async.aclose()
    await stock_async_cluster.aclose()
    stock_cluster.close()


async def test_the_librarys_own_clients_are_not_warned_about(
    valkey_server: EmbeddedServer, cluster: EmbeddedCluster, prefix: str
) -> None:
    sync_clients: list[redis.Redis | redis.cluster.RedisCluster] = [
        redis_patterns.connect(valkey_server.url),
        valkey_server.client(),
        cluster.client(),
        redis.Redis.from_url(valkey_server.url),  # redis-py 8: no Retry, 5 s timeout
    ]
    async_clients: list[redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster] = [
        redis_patterns.connect(valkey_server.url, asyncio=True),
        valkey_server.client(asyncio=True),
        cluster.client(asyncio=True),
    ]

    def build() -> None:
        for client in sync_clients:
            BoundedCounter(client, f"{prefix}:a", 5)
        for async_client in async_clients:
            AsyncBoundedCounter(async_client, f"{prefix}:a", 5)

    assert _caught(build) == []
    for client in sync_clients:
        client.close()
    for async_client in async_clients:
        await async_client.aclose()


async def test_warned_client_still_works(valkey_server: EmbeddedServer, prefix: str) -> None:
    """The warning is advice: the pattern runs on the client all the same."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=valkey_server.port or 0)
    with pytest.warns(RedisPatternsWarning):
        counter = AsyncBoundedCounter(client, f"{prefix}:a", 5)
    assert await counter.incr() == 1
    await client.aclose()


def test_a_retrying_client_does_not_resend_a_patterns_command(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """A stock client re-sends a command whose reply was lost; a pattern's command on a
    standalone client goes out in an exchange of its own, never re-sent: the outcome is
    unknown (it ran once), not applied twice."""
    with (
        FaultProxy(valkey_server) as proxy,
        redis.Redis(host=proxy.host, port=proxy.port) as client,
    ):
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            counter = BoundedCounter(client, prefix, 100)
        assert counter.incr() == 1
        proxy.drop_replies(match=b"EVALSHA")
        with pytest.raises(BackendUnavailableError):
            counter.incr()
        proxy.pass_through()
        assert proxy.stats.matched_requests == 1  # sent once
        assert counter.incr() == 3  # the lost one ran, once


async def test_a_retrying_asyncio_client_does_not_resend_a_patterns_command(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    with FaultProxy(valkey_server) as proxy:
        client = redis.asyncio.Redis(host=proxy.host, port=proxy.port)
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            counter = AsyncBoundedCounter(client, prefix, 100)
        assert await counter.incr() == 1
        proxy.drop_replies(match=b"EVALSHA")
        with pytest.raises(BackendUnavailableError):
            await counter.incr()
        proxy.pass_through()
        assert proxy.stats.matched_requests == 1
        assert await counter.incr() == 3
        await client.aclose()


async def test_a_single_connection_clients_commands_stay_on_its_connection(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """``single_connection_client``: every command on the client's one connection, so a
    ``SELECT`` made on it holds for the patterns too (sync and asyncio, batching on)."""
    port = valkey_server.port or 0
    sync = redis.Redis(port=port, single_connection_client=True, retry=Retry(NoBackoff(), 0))
    sync.execute_command("SELECT", 3)
    assert BoundedCounter(sync, f"{prefix}:s", 10).incr() == 1
    client = redis.asyncio.Redis(port=port, single_connection_client=True)
    with pytest.warns(RedisPatternsWarning):
        fresh = AsyncBoundedCounter(client, f"{prefix}:fresh", 10)
    assert await fresh.incr() == 1  # the first command opens the client's one connection
    await client.execute_command("SELECT", 3)
    counter = AsyncBoundedCounter(client, f"{prefix}:a", 10)
    assert await asyncio.gather(*(counter.incr() for _ in range(5))) != []
    with valkey_server.client(db=3) as three, valkey_server.client() as zero:
        assert (three.get(f"{prefix}:s"), three.get(f"{prefix}:a")) == (b"1", b"5")
        assert (zero.get(f"{prefix}:s"), zero.get(f"{prefix}:a")) == (None, None)
        assert zero.get(f"{prefix}:fresh") == b"1"
    pool = client.connection_pool
    assert len(pool._available_connections) + len(pool._in_use_connections) == 1
    sync.close()
    await client.aclose()


async def test_a_connection_the_server_closed_is_reopened_before_sending(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    """redis-py's asyncio pool lends a connection the server has closed (CLIENT KILL, a
    restart, its idle timeout) when maintenance notifications are on, its default: it is
    reconnected before anything is sent on it, so the call works, and runs once."""
    client = redis.asyncio.Redis(port=valkey_server.port or 0, socket_timeout=5)
    with pytest.warns(RedisPatternsWarning):
        counter = AsyncBoundedCounter(client, f"{prefix}:c", 100)
    assert await counter.incr() == 1
    with valkey_server.client() as admin:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    await asyncio.sleep(0.1)  # the close reaches the client's socket
    assert await counter.incr() == 2
    await client.aclose()


def test_warning_is_a_user_warning() -> None:
    assert issubclass(RedisPatternsWarning, UserWarning)
    assert "RedisPatternsWarning" in redis_patterns.__all__
