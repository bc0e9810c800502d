"""Clients for a Django setting's URL: ``redis://``, ``rediss://``, ``unix://`` (one server) or
``redis+cluster://host:port,host:port`` (``rediss+cluster://`` for TLS), with the library's
failure defaults (no re-sent commands, finite timeouts)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio.cluster
import redis.cluster
from django.core.exceptions import ImproperlyConfigured

from ..._clients import safe_options
from ..._server import connect

__all__ = ["client_for"]

_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


def _cluster_nodes(url: str, what: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    kwargs: dict[str, Any] = {"ssl": True} if _CLUSTER_SCHEMES[parts.scheme] else {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if password:
            kwargs["password"] = unquote(password)
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":")
        if not name or not port.isdigit():
            raise ImproperlyConfigured(
                f"{what} {url!r}: cluster nodes are host:port, comma-separated"
            )
        nodes.append((name.strip("[]"), int(port)))
    return nodes, kwargs


def client_for(url: str | None, options: dict[str, Any], *, asynchronous: bool, what: str) -> Any:
    """A new client for ``url`` (``None``: `connect`'s default, ``$REDIS_URL`` or an embedded
    server); ``options`` are redis-py keyword arguments and win over the defaults.

    Raises:
        ImproperlyConfigured: a cluster URL without ``host:port`` nodes (``what`` names the
            setting in the message).
    """
    if url is None or urlsplit(url).scheme not in _CLUSTER_SCHEMES:
        if asynchronous:
            return connect(url, asyncio=True, **options)
        return connect(url, **options)
    nodes, kwargs = _cluster_nodes(url, what)
    kwargs = safe_options({**kwargs, **options}, asyncio=asynchronous, cluster=True)
    if asynchronous:
        startup = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in nodes]
        return redis.asyncio.cluster.RedisCluster(startup_nodes=startup, **kwargs)
    sync_nodes = [redis.cluster.ClusterNode(host, port) for host, port in nodes]
    return redis.cluster.RedisCluster(startup_nodes=sync_nodes, **kwargs)
