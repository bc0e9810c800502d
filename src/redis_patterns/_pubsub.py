"""Dedicated pub/sub links: the only I/O a `Subscriber` does (part of the redis-py boundary).

A pub/sub connection is not a pooled request/response connection: it belongs to one
subscriber for its whole life and receives pushes. Each transport opens its own connection(s)
with redis-py's automatic retries **off**, so a broken link surfaces here as
`BackendUnavailableError` and the subscriber (whose reconnect policy is pure logic in
``_core/pubsub.py``) decides: count a gap, back off, reopen, resubscribe everything. redis-py's
own silent reconnect would hide exactly the gaps we promise to report.

On a Cluster, plain channels and patterns use one link to one node (cluster ``PUBLISH`` reaches
every node): the client's default node first, the node the runner sends a `Publisher`'s
``PUBLISH`` to, so a client's own messages reach its subscriptions in order, without the
cluster-bus hop; the other primaries in turn after a failure. Sharded channels use one link
per primary owning them (``SSUBSCRIBE`` must be sent to the channel's slot owner).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._redis import AsyncClient, SyncClient, backend_errors, check_clients

__all__ = ["AsyncPubSubTransport", "RawMessage", "PubSubTransport"]

RawMessage = dict[str, Any]
_MAIN = "main"
_IO_TIMEOUT = 5.0


# A broken link: a socket error; redis-py's PubSub raises AttributeError / RuntimeError once its
# connection was torn down. Opening: whatever went wrong, the link is not usable.
_SEND_ERRORS = backend_errors(broken=(OSError,))
_READ_ERRORS = backend_errors(broken=(OSError, AttributeError, RuntimeError))
_OPEN_ERRORS = backend_errors(broken=(Exception,))


def _main_node(default: Any, primaries: list[Any], rotation: int) -> Any:
    """The node for a cluster's main link: the default node, then each other primary in turn."""
    order = [default, *(node for node in primaries if node != default)]
    return order[rotation % len(order)]


def _link_kwargs(kwargs: dict[str, Any], retry: Any) -> dict[str, Any]:
    options = dict(kwargs)
    options["retry"] = retry
    options.pop("health_check_interval", None)  # liveness is ours: PING when quiet
    # A paused or half-open server must not hang the handshake or a send forever.
    for name in ("socket_timeout", "socket_connect_timeout"):
        if options.get(name) is None:
            options[name] = _IO_TIMEOUT
    return options


class PubSubTransport:
    """Blocking pub/sub link(s) for `Subscriber`."""

    def __init__(self, client: SyncClient) -> None:
        (self._client,) = check_clients(client, asynchronous=False)
        self._links: dict[str, Any] = {}
        self._rotation = 0
        self._opened = False

    @property
    def is_open(self) -> bool:
        return bool(self._links)

    def _new_link(self, node: Any = None) -> Any:
        if node is None:
            pool = self._client.connection_pool
        else:
            pool = node.redis_connection.connection_pool
        own = redis.ConnectionPool(
            connection_class=pool.connection_class,
            **_link_kwargs(pool.connection_kwargs, Retry(NoBackoff(), 0)),
        )
        return redis.Redis(connection_pool=own).pubsub()

    def _main(self) -> Any:
        link = self._links.get(_MAIN)
        if link is None:
            node = None
            if isinstance(self._client, redis.cluster.RedisCluster):
                client = self._client
                node = _main_node(client.get_default_node(), client.get_primaries(), self._rotation)
                self._rotation += 1  # the next reopen tries another node
            link = self._links[_MAIN] = self._new_link(node)
        return link

    def _shard(self, channel: bytes) -> Any:
        if not isinstance(self._client, redis.cluster.RedisCluster):
            return self._main()
        node = self._client.get_node_from_key(channel)
        link = self._links.get(node.name)
        if link is None:
            link = self._links[node.name] = self._new_link(node)
        return link

    def open(
        self, channels: Iterable[bytes], patterns: Iterable[bytes], shards: Iterable[bytes]
    ) -> None:
        """(Re)open the link(s) and subscribe to everything given."""
        self.close()
        shards = list(shards)
        try:
            with _OPEN_ERRORS:
                if shards and self._opened and isinstance(self._client, redis.cluster.RedisCluster):
                    # A reopen follows a failure, often a failover or a moved slot: learn where
                    # the shard channels' slots live now (the client's map is not told).
                    self._client.nodes_manager.initialize()
                self._opened = True
                self.subscribe(channels, patterns, shards)
                if not self._links:
                    self._main().ping()  # nothing to subscribe yet: still prove the link works
        except BaseException:
            self.close()
            raise

    def subscribe(
        self,
        channels: Iterable[bytes] = (),
        patterns: Iterable[bytes] = (),
        shards: Iterable[bytes] = (),
    ) -> None:
        with _SEND_ERRORS:
            if channels := list(channels):
                self._main().subscribe(*channels)
            if patterns := list(patterns):
                self._main().psubscribe(*patterns)
            for channel in shards:
                self._shard(channel).ssubscribe(channel)

    def unsubscribe(
        self,
        channels: Iterable[bytes] = (),
        patterns: Iterable[bytes] = (),
        shards: Iterable[bytes] = (),
    ) -> None:
        with _SEND_ERRORS:
            if channels := list(channels):
                self._main().unsubscribe(*channels)
            if patterns := list(patterns):
                self._main().punsubscribe(*patterns)
            for channel in shards:
                self._shard(channel).sunsubscribe(channel)

    def read(self, timeout: float) -> RawMessage | None:
        """The next push (message or confirmation), or None after ``timeout`` seconds."""
        links = list(self._links.values())
        if not links:
            time.sleep(timeout)
            return None
        share = timeout / len(links)
        with _READ_ERRORS:
            for link in links:
                message: RawMessage | None = link.get_message(timeout=share)
                if message is not None:
                    return message
        return None

    def ping(self) -> None:
        with _READ_ERRORS:
            for link in self._links.values():
                link.ping()

    def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            try:
                link.close()
                link.connection_pool.disconnect()
            except Exception:  # already broken: nothing left to release
                pass

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncPubSubTransport:
    """asyncio pub/sub link(s) for `AsyncSubscriber`."""

    def __init__(self, client: AsyncClient) -> None:
        (self._client,) = check_clients(client, asynchronous=True)
        self._links: dict[str, Any] = {}
        self._rotation = 0
        self._opened = False

    @property
    def is_open(self) -> bool:
        return bool(self._links)

    def _new_link(self, node: Any = None) -> Any:
        if node is None:
            cls = self._client.connection_pool.connection_class
            kwargs = self._client.connection_pool.connection_kwargs
        else:
            cls, kwargs = node.connection_class, node.connection_kwargs
        own = redis.asyncio.ConnectionPool(
            connection_class=cls, **_link_kwargs(kwargs, AsyncRetry(NoBackoff(), 0))
        )
        return redis.asyncio.Redis(connection_pool=own).pubsub()

    async def _cluster(self) -> Any:
        if isinstance(self._client, redis.asyncio.cluster.RedisCluster):
            await self._client.initialize()
            return self._client
        return None

    async def _main(self) -> Any:
        link = self._links.get(_MAIN)
        if link is None:
            node = None
            cluster = await self._cluster()
            if cluster is not None:
                node = _main_node(
                    cluster.get_default_node(), cluster.get_primaries(), self._rotation
                )
                self._rotation += 1
            link = self._links[_MAIN] = self._new_link(node)
        return link

    async def _shard(self, channel: bytes) -> Any:
        cluster = await self._cluster()
        if cluster is None:
            return await self._main()
        node = cluster.get_node_from_key(channel)
        link = self._links.get(node.name)
        if link is None:
            link = self._links[node.name] = self._new_link(node)
        return link

    async def open(
        self, channels: Iterable[bytes], patterns: Iterable[bytes], shards: Iterable[bytes]
    ) -> None:
        await self.close()
        shards = list(shards)
        try:
            with _OPEN_ERRORS:
                cluster = await self._cluster() if shards else None
                if cluster is not None and self._opened:
                    await cluster.nodes_manager.initialize()  # see PubSubTransport.open
                self._opened = True
                await self.subscribe(channels, patterns, shards)
                if not self._links:
                    await (await self._main()).ping()
        except BaseException:
            await self.close()
            raise

    async def subscribe(
        self,
        channels: Iterable[bytes] = (),
        patterns: Iterable[bytes] = (),
        shards: Iterable[bytes] = (),
    ) -> None:
        with _SEND_ERRORS:
            if channels := list(channels):
                await (await self._main()).subscribe(*channels)
            if patterns := list(patterns):
                await (await self._main()).psubscribe(*patterns)
            for channel in shards:
                await (await self._shard(channel)).ssubscribe(channel)

    async def unsubscribe(
        self,
        channels: Iterable[bytes] = (),
        patterns: Iterable[bytes] = (),
        shards: Iterable[bytes] = (),
    ) -> None:
        with _SEND_ERRORS:
            if channels := list(channels):
                await (await self._main()).unsubscribe(*channels)
            if patterns := list(patterns):
                await (await self._main()).punsubscribe(*patterns)
            for channel in shards:
                await (await self._shard(channel)).sunsubscribe(channel)

    async def read(self, timeout: float) -> RawMessage | None:
        links = list(self._links.values())
        if not links:
            await asyncio.sleep(timeout)
            return None
        share = timeout / len(links)
        with _READ_ERRORS:
            for link in links:
                message: RawMessage | None = await link.get_message(timeout=share)
                if message is not None:
                    return message
        return None

    async def ping(self) -> None:
        with _READ_ERRORS:
            for link in self._links.values():
                await link.ping()

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            try:
                await link.aclose()
                await link.connection_pool.disconnect()
            except Exception:  # already broken: nothing left to release
                pass

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
