"""`sentinel_client`: a client of a Sentinel-managed primary that follows a failover promptly.

redis-py's ``Sentinel.master_for`` asks the Sentinels where the primary is only when it opens a
connection, and a pool reuses its connections for as long as they work. After a graceful
``SENTINEL FAILOVER`` the old primary keeps working: Sentinel promotes a replica but tells the
old primary nothing until it reconfigures it, 8-10 s later. Until then every pooled connection
keeps writing there, and all of those acknowledged writes are discarded when it becomes a
replica (measured in docs/cluster.md: all writes of those seconds, e.g. 4,240 of 5,549).

The client built here asks again every ``recheck`` seconds, and at once after a ``READONLY`` or
``NOREPLICAS`` reply (the old primary refusing writes, with ``min-replicas-to-write``):

- its pool closes its idle connections when the primary moved, and drops the ones in use when
  they come back, so later commands open connections to the new primary (no error);
- a connection still open to the old primary (a pub/sub link, a pinned transaction) raises
  ``ConnectionError`` *before* sending anything: nothing runs on the old primary, a `Subscriber`
  resubscribes on the new one and reports a gap, a transaction is retried from WATCH.

Writes acknowledged by the old primary between the promotion and the next check are still lost
(and would be with any client): ``min-replicas-to-write`` on the servers closes most of that
window, `Lock` / `SessionStore` / `WriteBehind`'s ``wait_replicas`` report what was not
replicated. This is the only module besides the runners that touches redis-py's connections.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, cast, overload

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.retry import Retry

from ._clients import safe_options
from ._errors import ConfigurationError
from ._validate import duration_ms

__all__ = ["sentinel_client"]

DEFAULT_RECHECK = 0.5
"""Seconds between two questions to the Sentinels per connection (and per pool)."""


def _refused(exc: BaseException) -> bool:
    """READONLY (a demoted primary) or NOREPLICAS (one whose replicas left): ask again now."""
    return isinstance(exc, ReadOnlyError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("NOREPLICAS")
    )


class _Check:
    """When to ask the Sentinels again (thread-safe enough: a race only asks twice)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.at = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.at < self.every:
            return False
        self.at = now
        return True

    def now(self) -> None:
        self.at = -math.inf


def _primary(pool: Any) -> Any:
    """Where the Sentinels say the primary is; None if they cannot say (all unreachable, or
    mid-failover): an outage of the Sentinels must not stop a working connection."""
    try:
        return pool.get_master_address()
    except RedisConnectionError:
        return None


def _moved(address: Any, host: Any, port: Any) -> str | None:
    if address is None:
        return None
    if tuple(address) == (host, port):
        return None
    return (
        f"the primary moved from {host}:{port} to {address[0]}:{address[1]} (a failover): "
        "nothing was sent to the old one"
    )


class _FollowingConnection(redis.sentinel.SentinelManagedConnection):
    recheck = DEFAULT_RECHECK

    def __init__(self, **kwargs: Any) -> None:
        parent: Any = super()
        parent.__init__(**kwargs)
        self._check = _Check(self.recheck)

    def connect_to(self, address: Any) -> None:
        parent: Any = super()
        parent.connect_to(address)
        self._check.at = time.monotonic()  # just asked the Sentinels

    def _follow(self) -> None:
        """Raise (before sending or waiting for anything) if the primary moved elsewhere."""
        if self._sock is not None and self._check.due():
            moved = _moved(_primary(self.connection_pool), self.host, self.port)
            if moved is not None:
                self.disconnect()
                raise RedisConnectionError(moved)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._follow()
        parent: Any = super()
        parent.send_packed_command(command, check_health)

    def can_read(self, timeout: float = 0) -> bool:
        # Asked by a pub/sub reader waiting for pushes (a near cache's listener never sends)
        # and by the pool before lending the connection: both are idle moments.
        self._follow()
        parent: Any = super()
        return bool(parent.can_read(timeout))

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # Skip redis-py's own READONLY handling (it disconnects mid-pipeline and turns the
            # reply into a ConnectionError): the reply says nothing was written, keep it.
            return redis.connection.Connection.read_response(self, *args, **kwargs)
        except ResponseError as exc:
            if _refused(exc):
                self._check.now()
                self.connection_pool.following.now()
            raise


class _FollowingPool(redis.sentinel.SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        parent: Any = super()
        parent.__init__(service_name, sentinel_manager, **kwargs)
        self.following = _Check(kwargs["connection_class"].recheck)
        self.proxy.following = self.following  # type: ignore[attr-defined]
        self._asking = threading.Lock()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        parent: Any = super()
        if self.following.due() and self._asking.acquire(blocking=False):
            try:
                # Closes the idle connections if the primary moved. No primary known right now
                # (mid-failover): connecting will say so.
                with contextlib.suppress(RedisConnectionError):
                    parent.get_master_address()
            finally:
                self._asking.release()
        return parent.get_connection(*args, **kwargs)

    def disconnect(self, inuse_connections: bool = True) -> None:
        parent: Any = super()
        parent.disconnect(inuse_connections)
        if inuse_connections:  # closing the client: its Sentinel connections too (no handle)
            for sentinel in self.sentinel_manager.sentinels:
                sentinel.close()


class _AsyncFollowingConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    recheck = DEFAULT_RECHECK

    def __init__(self, **kwargs: Any) -> None:
        parent: Any = super()
        parent.__init__(**kwargs)
        self._check = _Check(self.recheck)

    async def connect_to(self, address: Any) -> None:
        parent: Any = super()
        await parent.connect_to(address)
        self._check.at = time.monotonic()

    async def _follow(self) -> None:
        """`_FollowingConnection._follow`."""
        if self.is_connected and self._check.due():
            try:
                address = await self.connection_pool.get_master_address()
            except RedisConnectionError:
                address = None  # see _primary
            moved = _moved(address, self.host, self.port)
            if moved is not None:
                await self.disconnect()
                raise RedisConnectionError(moved)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await self._follow()
        parent: Any = super()
        await parent.send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("push_request"):
            # A pub/sub reader waiting for pushes (a near cache's listener never sends):
            # nothing is in flight.
            await self._follow()
        try:
            return await redis.asyncio.connection.Connection.read_response(self, *args, **kwargs)
        except ResponseError as exc:
            if _refused(exc):
                self._check.now()
                self.connection_pool.following.now()
            raise


class _AsyncFollowingPool(redis.asyncio.sentinel.SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        parent: Any = super()
        parent.__init__(service_name, sentinel_manager, **kwargs)
        self.following = _Check(kwargs["connection_class"].recheck)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        parent: Any = super()
        if self.following.due():
            with contextlib.suppress(RedisConnectionError):
                await parent.get_master_address()
        return await parent.get_connection(*args, **kwargs)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        parent: Any = super()
        await parent.disconnect(inuse_connections)
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def _address(reply: Any) -> tuple[str, int] | None:
    if not reply:
        return None
    host, port = reply
    return (host.decode() if isinstance(host, bytes) else str(host), int(port))


class _Sentinels(redis.sentinel.Sentinel):
    """Asks ``SENTINEL GET-MASTER-ADDR-BY-NAME``: it names the promoted replica about a second
    before ``SENTINEL MASTERS`` (redis-py's question) does, once the failover has promoted it."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        for index, sentinel in enumerate(self.sentinels):
            try:
                found = _address(
                    sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", service_name)
                )
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            if found is not None:
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return found
        raise redis.sentinel.MasterNotFoundError(f"No master found for {service_name!r}")


class _AsyncSentinels(redis.asyncio.sentinel.Sentinel):
    """`_Sentinels` for asyncio."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        for index, sentinel in enumerate(self.sentinels):
            try:
                found = _address(
                    await sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", service_name)
                )
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            if found is not None:
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return found
        raise redis.asyncio.sentinel.MasterNotFoundError(f"No master found for {service_name!r}")


@overload
def sentinel_client(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    *,
    asyncio: Literal[False] = False,
    recheck: float = DEFAULT_RECHECK,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> redis.Redis: ...


@overload
def sentinel_client(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    *,
    asyncio: Literal[True],
    recheck: float = DEFAULT_RECHECK,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> redis.asyncio.Redis: ...


def sentinel_client(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    *,
    asyncio: bool = False,
    recheck: float = DEFAULT_RECHECK,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> redis.Redis | redis.asyncio.Redis:
    """A client of the primary that the Sentinels at ``sentinels`` watch as ``service``.

    Like ``redis.sentinel.Sentinel(sentinels).master_for(service)``, but it follows a failover
    within ``recheck`` seconds instead of at the old primary's demotion (see the module
    docstring), and it is configured like `connect`'s clients: finite timeouts, no re-sending
    (``kwargs`` override them). The Sentinels are asked with 0.5 s timeouts and no retries
    (``sentinel_kwargs`` override those), so a dead Sentinel costs one timeout, not ten.

    Args:
        sentinels: ``(host, port)`` of each Sentinel.
        service: the name the Sentinels monitor the primary under.
        asyncio: return a ``redis.asyncio`` client.
        recheck: seconds between two questions to the Sentinels, per pool and per open
            connection (> 0; each is one ``SENTINEL MASTERS`` round trip).

    Raises:
        ConfigurationError: no Sentinel, an empty service name, or a bad ``recheck``.
    """
    if not sentinels:
        raise ConfigurationError("give at least one Sentinel address")
    if not isinstance(service, str) or not service:
        raise ConfigurationError(f"service must be a non-empty str, got {service!r}")
    every = duration_ms(recheck, "recheck") / 1000
    options = safe_options(dict(kwargs), asyncio=asyncio, cluster=False)
    asking = {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        "retry": AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0),
        **(sentinel_kwargs or {}),
    }
    addresses = [(str(host), int(port)) for host, port in sentinels]
    if asyncio:
        async_class = type("FollowingConnection", (_AsyncFollowingConnection,), {"recheck": every})
        async_manager: Any = cast(Any, _AsyncSentinels)(addresses, sentinel_kwargs=asking)
        async_client: redis.asyncio.Redis = async_manager.master_for(
            service,
            connection_pool_class=_AsyncFollowingPool,
            connection_class=async_class,
            **options,
        )
        return async_client
    sync_class = type("FollowingConnection", (_FollowingConnection,), {"recheck": every})
    manager: Any = cast(Any, _Sentinels)(addresses, sentinel_kwargs=asking)
    client: redis.Redis = manager.master_for(
        service, connection_pool_class=_FollowingPool, connection_class=sync_class, **options
    )
    return client
