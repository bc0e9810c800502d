"""Dedicated pub/sub links, the only I/O a `Subscriber` does: what both flavours' links share.

The transport is written once, for asyncio: `AsyncPubSubTransport` in ``_pubsub_async.py``;
``scripts/unasync.py`` generates the blocking `PubSubTransport` (``_pubsub_sync.py``) from it.
Where redis-py's two flavours differ by more than names, a pair of helpers here (``*_async`` /
``*_sync``) answers for each side. All three modules are the redis-py boundary.

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
import threading
from typing import Any

import redis.asyncio.cluster
import redis.cluster

from ._redis import backend_errors

__all__ = ["RawMessage"]

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


# What the flavours do differently, beyond the names the generator rewrites.


def _node_connection_async(node: Any) -> tuple[Any, dict[str, Any]]:
    """An asyncio cluster node's connection class and kwargs: the node keeps them itself."""
    return node.connection_class, node.connection_kwargs


def _node_connection_sync(node: Any) -> tuple[Any, dict[str, Any]]:
    """A sync cluster node's connection class and kwargs: its client's pool keeps them."""
    pool = node.redis_connection.connection_pool
    return pool.connection_class, pool.connection_kwargs


# Any, not the asyncio RedisCluster, whose annotations want a str key (a bytes channel works) and
# answer an Optional node (None only when a replica is asked for).
async def _cluster_async(client: Any) -> Any:
    """The client if it is a Cluster's, initialized: an asyncio one maps slots on first use."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()
        return client
    return None


def _cluster_sync(client: Any) -> redis.cluster.RedisCluster | None:
    """The client if it is a Cluster's (a sync one mapped its slots when it was made)."""
    return client if isinstance(client, redis.cluster.RedisCluster) else None


# One reader at a time on a subscriber's links: a task (or thread) that subscribes and waits
# for the confirmation reads the link too, and two reads in flight on one connection break it
# (redis-py reconnects it under both, leaking the old socket and opening a gap).
def _read_lock_async() -> asyncio.Lock:
    return asyncio.Lock()


def _read_lock_sync() -> threading.Lock:
    return threading.Lock()
