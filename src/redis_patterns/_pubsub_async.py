"""`AsyncPubSubTransport`: `AsyncSubscriber`'s dedicated pub/sub links (how: `_pubsub.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff

from ._pubsub import (
    _MAIN,
    _OPEN_ERRORS,
    _READ_ERRORS,
    _SEND_ERRORS,
    RawMessage,
    _cluster_async,
    _link_kwargs,
    _main_node,
    _node_connection_async,
    _read_lock_async,
)
from ._redis import AsyncClient, check_clients

__all__ = ["AsyncPubSubTransport"]


class AsyncPubSubTransport:
    """Pub/sub link(s) for `AsyncSubscriber`."""

    def __init__(self, client: AsyncClient) -> None:
        (self._client,) = check_clients(client, asynchronous=True)
        self._links: dict[str, Any] = {}
        self._rotation = 0
        self._opened = False
        # Held by whoever reads the links (`AsyncSubscriber`: a read slice, a reconnection, a
        # subscription's confirmation), so two reads are never in flight on one connection.
        self.read_lock = _read_lock_async()

    @property
    def is_open(self) -> bool:
        return bool(self._links)

    def _new_link(self, node: Any = None) -> Any:
        if node is None:
            pool = self._client.connection_pool
            cls, kwargs = pool.connection_class, pool.connection_kwargs
        else:
            cls, kwargs = _node_connection_async(node)
        retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
        own = redis.asyncio.ConnectionPool(connection_class=cls, **_link_kwargs(kwargs, retry))
        return redis.asyncio.Redis(connection_pool=own).pubsub()

    async def _main(self) -> Any:
        link = self._links.get(_MAIN)
        if link is None:
            node = None
            cluster = await _cluster_async(self._client)
            if cluster is not None:
                node = _main_node(
                    cluster.get_default_node(), cluster.get_primaries(), self._rotation
                )
                self._rotation += 1  # the next reopen tries another node
            link = self._links[_MAIN] = self._new_link(node)
        return link

    async def _shard(self, channel: bytes) -> Any:
        cluster = await _cluster_async(self._client)
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
        """(Re)open the link(s) and subscribe to everything given."""
        await self.close()
        shards = list(shards)
        try:
            with _OPEN_ERRORS:
                cluster = await _cluster_async(self._client) if shards else None
                if cluster is not None and self._opened:
                    # A reopen follows a failure, often a failover or a moved slot: learn where
                    # the shard channels' slots live now (the client's map is not told).
                    await cluster.nodes_manager.initialize()
                self._opened = True
                await self.subscribe(channels, patterns, shards)
                if not self._links:
                    # Nothing to subscribe yet: still prove the link works.
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
        """The next push (message or confirmation), or None after ``timeout`` seconds."""
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
