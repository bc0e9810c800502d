"""A cluster client behind one `FaultProxy` per node (``address_remap``), for the tests that
count a cluster client's writes per node (tests/api and tests/faults)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio.cluster

from redis_patterns import EmbeddedCluster, EmbeddedServer
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.counter import CommandCounter


@dataclass
class Proxied:
    """A cluster client whose every node is reached through a proxy of its own."""

    cluster: EmbeddedCluster
    client: redis.asyncio.cluster.RedisCluster
    proxies: dict[int, FaultProxy]  # by the real node's port

    def writes(self) -> dict[int, int]:
        return {port: proxy.stats.forwarded_requests for port, proxy in self.proxies.items()}

    def since(self, before: dict[int, int]) -> dict[int, int]:
        """Writes per master since ``before`` (masters only: replicas get none)."""
        now = self.writes()
        return {m.port or 0: now[m.port or 0] - before[m.port or 0] for m in self.masters}

    @property
    def masters(self) -> list[EmbeddedServer]:
        return self.cluster.masters()

    def counter(self) -> CommandCounter:
        return CommandCounter([("127.0.0.1", m.port or 0) for m in self.masters])


def proxied_client(
    cluster: EmbeddedCluster, fault_proxy: Callable[..., FaultProxy], **options: Any
) -> tuple[redis.asyncio.cluster.RedisCluster, dict[int, FaultProxy]]:
    proxies = {node.port or 0: fault_proxy(node) for node in cluster.nodes}

    def remap(address: tuple[str, int]) -> tuple[str, int]:
        proxy = proxies.get(address[1])
        return (proxy.host, proxy.port) if proxy is not None else address

    options.setdefault("max_connections", 512)
    return cluster.client(asyncio=True, address_remap=remap, **options), proxies


def keys_on(proxied: Proxied, master: EmbeddedServer, stem: str, count: int) -> list[str]:
    """``count`` distinct keys (each its own slot) that ``master`` serves, as the client sees it
    through that master's proxy (a slot map read from a startup node may also name that node
    by its own address: a second name for the same server, which the batcher keeps apart)."""
    proxy = proxied.proxies[master.port or 0]
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{stem}:{i}"
        node = proxied.client.get_node_from_key(key)
        if node is not None and int(node.port) == proxy.port:
            found.append(key)
        i += 1
    return found
