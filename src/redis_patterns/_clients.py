"""How a redis-py client behaves when a server stalls: the options the library builds clients with,
what a given client will do (re-send? wait forever?), and the one warning for a risky client.

redis-py has moved these knobs between versions, so every reading here is version-aware:

- standalone clients re-send through their connections' ``Retry``; 6.0+ re-sends whatever the
  ``Retry`` allows (``redis.Redis(host=...)`` has 3 retries in 6.x/7.x, 10 in 8.x), while 5.x
  re-sends only errors listed in ``retry_on_error`` / ``retry_on_timeout``. ``Redis.from_url``
  leaves the connections without a ``Retry`` (no re-send) in every version;
- cluster clients re-send through the client's own ``retry`` in 6.0+, and through
  ``cluster_error_retry_attempts`` (and, for asyncio, ``connection_error_retry_attempts``) in 5.x;
- the socket timeout defaults to None (wait forever) before 8.0 and to 5 s in 8.x.
"""

from __future__ import annotations

import inspect
import sys
import threading
import warnings
import weakref
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._errors import RedisPatternsWarning

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "read_timeout",
    "resends",
    "safe_options",
    "warn_if_risky",
]

DEFAULT_SOCKET_TIMEOUT = 3.0
"""Seconds `connect` waits for a reply: far above any command the library sends (its longest
blocking read, a stream worker's ``XREADGROUP BLOCK``, is capped at 80 % of it), short enough
that a stalled server fails a web request (and engages ``fail_open``) instead of hanging it."""
DEFAULT_CONNECT_TIMEOUT = 2.0
"""Seconds `connect` waits for a TCP connection: enough for one lost SYN to be re-sent (Linux
waits 1 s before the first retransmission)."""

_REDIS_MAJOR = int(redis.__version__.split(".")[0])
# redis-py 5 re-sends only errors named in retry_on_error (its Redis._disconnect_raise).
_RESEND_NEEDS_ERROR_LIST = hasattr(redis.Redis, "_disconnect_raise")
# A Retry whose retries is -1 retries forever.
_FOREVER = sys.maxsize


def _async_takes_maint_notifications() -> bool:
    try:
        from redis.maint_notifications import MaintNotificationsConfig  # noqa: F401
    except ImportError:  # redis-py < 7: no maintenance notifications, nothing to turn off
        return False
    return "maint_notifications_config" in inspect.signature(redis.asyncio.Redis).parameters


_ASYNC_MAINT = _async_takes_maint_notifications()


def safe_options(options: dict[str, Any], *, asyncio: bool, cluster: bool) -> dict[str, Any]:
    """``options`` plus, where not given: finite timeouts and no re-sending of commands."""
    options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if cluster and _REDIS_MAJOR < 6:
        options.setdefault("cluster_error_retry_attempts", 0)
        if asyncio:
            options.setdefault("connection_error_retry_attempts", 0)
    else:
        retry = AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0)
        options.setdefault("retry", retry)
    if asyncio and not cluster and _ASYNC_MAINT:
        from redis.maint_notifications import MaintNotificationsConfig

        # redis-py 8's asyncio pool skips its "is this pooled connection closed?" check while
        # maintenance notifications are "auto" (truthy), so the first call after a server
        # restart fails on the dead connection; with re-sending off that is an error.
        options.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    return options


def _retries(retry: object) -> int:
    if retry is None:
        return 0
    get = getattr(retry, "get_retries", None)  # redis-py >= 6; 5.x only has the attribute
    count = int(get() if callable(get) else getattr(retry, "_retries", 0))
    return _FOREVER if count < 0 else count


def resends(client: object) -> int:
    """How many times ``client`` re-sends a command after a connection error or timeout; no I/O."""
    if isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster):
        legacy = getattr(client, "cluster_error_retry_attempts", None)  # redis-py 5
        count = legacy if isinstance(legacy, int) else _retries(getattr(client, "retry", None))
        per_node = getattr(client, "connection_error_retry_attempts", None)  # redis-py 5 asyncio
        return max(count, per_node if isinstance(per_node, int) else 0)
    connection = getattr(client, "connection", None)  # single_connection_client=True
    if connection is not None:
        count = _retries(getattr(connection, "retry", None))
        on_error = list(getattr(connection, "retry_on_error", None) or [])
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
        on_error = list(kwargs.get("retry_on_error") or [])
        if kwargs.get("retry_on_timeout"):
            on_error.append(TimeoutError)
        retry = kwargs.get("retry")
        # A connection given no Retry re-sends once when told which errors to re-send.
        count = _retries(retry) if retry is not None else (1 if on_error else 0)
    if _RESEND_NEEDS_ERROR_LIST and not on_error:
        return 0
    return count


def read_timeout(client: object) -> float | None:
    """The socket timeout the client's connections will use (None: wait forever); no I/O.

    redis-py keeps it in the pool's (or the cluster's) connection kwargs; when absent there, the
    connection class's own default applies (5 s in redis-py 8, None before).
    """
    pool = getattr(client, "connection_pool", None)
    manager = getattr(client, "nodes_manager", None)
    kwargs: dict[str, Any] = (
        getattr(pool, "connection_kwargs", None)
        or getattr(manager, "connection_kwargs", None)
        or getattr(client, "connection_kwargs", None)
        or {}
    )
    if "socket_timeout" in kwargs:
        value = kwargs["socket_timeout"]
        return None if value is None else float(value)
    connection_class = (
        getattr(pool, "connection_class", None)
        or kwargs.get("connection_class")
        or (
            redis.asyncio.connection.Connection
            if isinstance(client, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster)
            else redis.connection.Connection
        )
    )
    for cls in getattr(connection_class, "__mro__", ()):
        init = cls.__dict__.get("__init__")
        parameter = (
            None if init is None else inspect.signature(init).parameters.get("socket_timeout")
        )
        if parameter is not None:
            default = parameter.default
            return float(default) if isinstance(default, int | float) else None
    return None


def _risks(client: object) -> str | None:
    """What can go wrong with ``client``, and how to fix it; None when nothing can."""
    count = resends(client)
    timeout = read_timeout(client)
    problems = []
    cluster = isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)
    if count:
        times = "without end" if count >= _FOREVER else f"up to {count} times"
        bounded = timeout is not None and count < _FOREVER
        stall = f", about {(count + 1) * (timeout or 0):g} s" if bounded else ""
        # On a standalone client the patterns send their scripts and pipelines without the
        # client's Retry (`_redis_steps`); transactions, blocking reads and the caller's own
        # commands still go through it.
        calls = (
            "a non-idempotent call (a limiter hit, an increment, a queue add)"
            if cluster
            else "a non-idempotent call of yours or a transaction's (an increment, a queue add)"
        )
        problems.append(
            f"it re-sends a command after a connection error or a timeout ({times}): a "
            f"command whose reply was lost runs again, so {calls} is applied twice, and a "
            f"call to a stalled server waits for every attempt{stall}"
        )
    if timeout is None:
        problems.append(
            "it has no socket_timeout: a call to a stalled server (paused, overloaded, behind "
            "a half-open link) blocks forever, so a rate limiter's fail_open never engages"
        )
    if not problems:
        return None
    fixes = []
    if count:
        if cluster and _REDIS_MAJOR < 6:
            fixes.append("cluster_error_retry_attempts=0")
        else:
            fixes.append("retry=Retry(NoBackoff(), 0)")
    if timeout is None:
        fixes.append(f"socket_timeout={DEFAULT_SOCKET_TIMEOUT:g}")
    kind = type(client).__module__ + "." + type(client).__qualname__
    build = "Pass" if cluster else "Build it with redis_patterns.connect(url), or pass"
    return (
        f"{kind} client: {'; and '.join(problems)}. {build} {' and '.join(fixes)} "
        "(see 'Retries and outcome-unknown errors' in the architecture docs)"
    )


_vetted: weakref.WeakSet[Any] = weakref.WeakSet()
_vetted_lock = threading.Lock()


def _first_time(client: object) -> bool:
    try:
        if client in _vetted:  # the common case: one weak reference, no lock
            return False
        with _vetted_lock:
            if client in _vetted:
                return False
            _vetted.add(client)
    except TypeError:  # not weakly referenceable (a custom subclass): check it each time
        pass
    return True


def warn_if_risky(clients: tuple[Any, ...]) -> None:
    """Issue one `RedisPatternsWarning` per client that can apply a call twice or hang.

    Cheap after the first look at a client (a set lookup); never raises for an odd client.
    """
    for client in clients:
        if not _first_time(client):
            continue
        try:
            message = _risks(client)
        except Exception:  # a client too unusual to read: say nothing rather than break it
            message = None
        if message is not None:
            warnings.warn(RedisPatternsWarning(message), stacklevel=_callers_level())


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside this package (the user's constructor call)."""
    level, frame = 2, sys._getframe(2)  # 1 is warn_if_risky's frame; start at its caller
    while frame is not None and frame.f_globals.get("__name__", "").startswith("redis_patterns."):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
