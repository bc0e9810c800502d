"""The redis-py boundary: client kinds, slot checks, command arguments, error conversion and the
steps' vocabulary (`Invoke`, `Context`); each command-sending effect as the redis-py calls that
perform it is in `_redis_steps` (WATCH transactions: `_redis_transaction`; auto-pipelining:
`_autopipeline`, switched by `_redis_steps.autopipeline`).

The runners import no redis. They ask this module how to perform an effect: a generator that
yields `Invoke` steps, each one call on a redis-py object, which the sync runner makes and the
asyncio runner makes and awaits. So the NOSCRIPT retry, the pipeline's bookkeeping and the
WATCH transaction are written once for both. redis-py's errors become the library's in one
place, `backend_errors` (which calls `map_backend_error`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Protocol, TypeAlias, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions as rex
from redis.crc import key_slot

from . import _metrics
from ._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    CrossSlotError,
    PermissionDeniedError,
    RedisPatternsError,
    ScriptError,
    ServerBusyError,
)
from ._plan import (
    Command,
    Eval,
    Features,
    Gather,
    KeyT,
)

__all__ = [
    "AsyncClient",
    "AsyncPipeline",
    "AsyncTransactionFunction",
    "Invoke",
    "Steps",
    "SyncClient",
    "SyncPipeline",
    "TransactionFunction",
    "backend_errors",
    "check_clients",
    "client_features",
    "decodes_responses",
    "is_cluster",
    "map_backend_error",
    "node_address",
]

T = TypeVar("T")

SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
SyncPipeline: TypeAlias = "redis.client.Pipeline | redis.cluster.ClusterPipeline"
AsyncPipeline: TypeAlias = "redis.asyncio.client.Pipeline | redis.asyncio.cluster.ClusterPipeline"
# The body of a WATCH transaction: reads on the pipeline, then pipe.multi() and queued writes.
TransactionFunction: TypeAlias = "Callable[[SyncPipeline], T]"
AsyncTransactionFunction: TypeAlias = "Callable[[AsyncPipeline], Awaitable[T]]"

SYNC_TYPES = (redis.Redis, redis.cluster.RedisCluster)
ASYNC_TYPES = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
_CLUSTER_TYPES = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


# --- client kinds ------------------------------------------------------------------------------


def check_clients(clients: Any, *, asynchronous: bool) -> tuple[Any, ...]:
    """``clients`` (one or a list) as a tuple, each checked to be a redis-py client of the
    flavour asked for: the other flavour is a `TypeError` that names the right class."""
    items = tuple(clients) if isinstance(clients, list | tuple) else (clients,)
    if not items:
        raise ConfigurationError("at least one client is required")
    types, kind = (ASYNC_TYPES, "an asyncio") if asynchronous else (SYNC_TYPES, "a sync")
    for client in items:
        if not isinstance(client, types):
            other = "sync" if asynchronous else "asyncio"
            raise TypeError(
                f"expected {kind} redis-py client, got {_describe(client)}"
                + (f" (use the {other} variant of this class)" if _is_client(client) else "")
            )
    return items


def _is_client(obj: object) -> bool:
    return isinstance(obj, SYNC_TYPES + ASYNC_TYPES)


def _describe(client: object) -> str:
    return type(client).__module__ + "." + type(client).__qualname__


# An isinstance check against redis-py's client classes costs about 2 µs (their metaclass is
# typing's _ProtocolMeta), as much as the rest of a step: the answers are kept per client class.
_CLUSTER_KINDS: dict[type, bool] = {}
_ASYNC_KINDS: dict[type, bool] = {}


def _is_kind(client: object, kinds: tuple[type, ...], answers: dict[type, bool]) -> bool:
    kind = type(client)
    answer = answers.get(kind)
    if answer is None:
        answer = answers[kind] = issubclass(kind, kinds)
    return answer


def is_cluster(client: object) -> bool:
    return _is_kind(client, _CLUSTER_TYPES, _CLUSTER_KINDS)


def is_asyncio(client: object) -> bool:
    """Whether ``client`` is an asyncio redis-py client (kept per class, as `is_cluster`)."""
    return _is_kind(client, ASYNC_TYPES, _ASYNC_KINDS)


def decodes_responses(client: object) -> bool:
    """Whether ``client`` was made with ``decode_responses=True`` (its replies are str)."""
    encoder = getattr(client, "get_encoder", None)
    return bool(encoder is not None and getattr(encoder(), "decode_responses", False))


def node_address(client: object) -> str:
    """``host:port`` (or the unix socket path) a standalone client connects to; no I/O.

    Raises:
        TypeError: ``client`` is a cluster client (it has no single address).
    """
    if is_cluster(client):
        raise TypeError("expected a standalone client, got a cluster client")
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


_FEATURES = "_redis_patterns_features"


def client_features(client: object) -> Features:
    """The `Features` record of ``client``: one per client, whichever object uses it.

    It is kept on the client object itself, so it lives exactly as long as the client and needs
    no global registry. A client that takes no attributes gets a fresh record each time: its
    users then probe once each, which costs a refused command, never a wrong answer.
    """
    features = getattr(client, _FEATURES, None)
    if not isinstance(features, Features):
        features = Features()
        with contextlib.suppress(AttributeError, TypeError):
            setattr(client, _FEATURES, features)
    return features


def check_slots(client: object, keys: Sequence[KeyT]) -> None:
    """Refuse, before any I/O, keys that a cluster would spread over several slots."""
    if len(keys) > 1 and is_cluster(client):
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        if len(slots) > 1:
            raise CrossSlotError(
                f"keys {list(keys)!r} hash to {len(slots)} different cluster slots; give them a "
                "common hash tag, e.g. '{user:42}:a' and '{user:42}:b'"
            )


# --- errors ------------------------------------------------------------------------------------

# Replies meaning "the server cannot run commands now; nothing ran": LOADING (its dataset),
# CLUSTERDOWN (the slot is not served), MASTERDOWN (a replica cut off from its primary), TRYAGAIN
# (a slot in migration). redis-py has a class for each (BusyLoadingError, ClusterDownError,
# MasterDownError, TryAgainError) and strips the code from the text; the prefix check catches
# the same reply where it arrives as plain text (a pipeline, a script's error, an old client).
_NOT_NOW = (rex.BusyLoadingError, rex.ClusterDownError, rex.TryAgainError)
# UNBLOCKED: a blocking read was ended before it read anything (its stream key migrated to
# another node, or CLIENT UNBLOCK ... ERROR).
_NOT_NOW_CODES = ("LOADING ", "CLUSTERDOWN ", "MASTERDOWN ", "TRYAGAIN ", "UNBLOCKED ")
# Replies meaning "this server will not take writes now; nothing was written": READONLY (it is
# a replica: a failover demoted it while this client still talked to it) and NOREPLICAS (a
# primary with fewer good replicas than min-replicas-to-write, e.g. its replicas just left it for
# a promoted one). In a script the first write fails, so none of the script's writes happened.
_NO_WRITES_CODES = ("READONLY ", "NOREPLICAS ")
_PIPELINE_PREFIX = " of pipeline caused error: "
# The cluster client's own "no node serves this slot" and "no node answered" (it raises these
# as RedisClusterException, which does not derive from RedisError).
_UNSERVED = ("not covered", "cannot be connected")
REDIS_ERRORS = (rex.RedisError, rex.RedisClusterException)


def map_backend_error(exc: BaseException, *, in_script: bool = False) -> BaseException:
    """Return the library error for a redis-py error (the caller raises it ``from exc``).

    ``in_script`` says the failed command ran a script, so any error reply is the script's.
    Exceptions that are not redis-py's are returned unchanged.
    """
    if isinstance(exc, RedisPatternsError) or not isinstance(exc, REDIS_ERRORS):
        return exc
    # redis-py prefixes an error inside a transaction with "Command # n (...) of pipeline caused
    # error: "; the server's reply code follows it.
    text = str(exc).split(_PIPELINE_PREFIX, 1)[-1]
    if isinstance(exc, rex.TimeoutError):
        return BackendTimeoutError(f"no reply from the server in time (outcome unknown): {text}")
    if isinstance(exc, _NOT_NOW) or text.startswith(_NOT_NOW_CODES):
        return BackendUnavailableError(f"the server cannot run commands now: {text}")
    if isinstance(exc, rex.ReadOnlyError) or text.startswith(_NO_WRITES_CODES):
        return BackendUnavailableError(
            f"the server refused the write, nothing was written (a replica, or a primary "
            f"without enough replicas; after a failover, reconnect to the new primary): {text}"
        )
    if isinstance(exc, rex.ClusterError):  # "TTL exhausted": every attempt was redirected
        return BackendUnavailableError(f"the cluster kept redirecting the command: {text}")
    if isinstance(exc, rex.ConnectionError):
        return BackendUnavailableError(f"cannot reach the server: {text}")
    if isinstance(exc, rex.NoPermissionError) or text.startswith("NOPERM"):
        return PermissionDeniedError(text)
    if isinstance(exc, rex.ResponseError) and text.startswith("BUSY"):
        return ServerBusyError(text)
    cluster_side = isinstance(exc, rex.RedisClusterException)
    if "CROSSSLOT" in text or (cluster_side and "same key slot" in text):
        return CrossSlotError(text)
    if cluster_side and any(words in text for words in _UNSERVED):
        return BackendUnavailableError(f"the cluster cannot serve this now: {text}")
    if isinstance(exc, rex.ResponseError) and (in_script or "script" in text.lower()):
        return ScriptError(text)
    return BackendError(text or type(exc).__name__)


class backend_errors:  # lower case, as it is used: like contextlib.suppress
    """Convert the redis-py errors raised in the ``with`` block to the library's, chained with
    ``from``: the one place where that happens.

    It only wraps exceptions, so it serves async code as well::

        with backend_errors(in_script=True):
            return await client.execute_command("EVALSHA", ...)

    Args:
        in_script: the block runs a script, so an error reply is the script's (`ScriptError`).
        mapper: converts instead of `map_backend_error` (a transaction's phase decides).
        broken: further exception types that mean a dedicated link broke (a pub/sub link's
            ``OSError``; the ``AttributeError`` / ``RuntimeError`` of redis-py's ``PubSub``
            after its connection was torn down): they become `BackendUnavailableError`.
    """

    __slots__ = ("_broken", "_in_script", "_mapper")

    def __init__(
        self,
        *,
        in_script: bool = False,
        mapper: Callable[[BaseException], BaseException] | None = None,
        broken: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._in_script = in_script
        self._mapper = mapper
        self._broken = broken

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, RedisPatternsError):
            return
        if isinstance(exc, REDIS_ERRORS):
            if self._mapper is not None:
                raise _counted(self._mapper(exc), exc) from exc
            raise _counted(map_backend_error(exc, in_script=self._in_script), exc) from exc
        if self._broken and isinstance(exc, self._broken):
            error = BackendUnavailableError(f"pub/sub link broken: {exc!r}")
            raise _counted(error, exc) from exc


# Error replies that queue plans expect and handle (creating a group that exists, asking for
# the pending entries of a group not created yet): not failures, so not counted.
_EXPECTED = ("BUSYGROUP", "NOGROUP")


def _counted(error: BaseException, exc: BaseException) -> BaseException:
    """``error`` (converted from redis-py's ``exc``), counted in the backend errors metric."""
    if _metrics.on and not str(exc).startswith(_EXPECTED):
        _metrics.BACKEND_ERRORS.record((type(error).__name__,))
    return error


_SCRIPT_ERRORS = backend_errors(in_script=True)
_COMMAND_ERRORS = backend_errors()


def _map_item(effect: Eval | Command, result: Any) -> Any:
    """A pipelined item's reply, or the library error its redis-py error reply means."""
    if isinstance(result, rex.RedisError):
        error = _counted(map_backend_error(result, in_script=isinstance(effect, Eval)), result)
        error.__cause__ = result
        return error
    return result


# --- steps -------------------------------------------------------------------------------------


class Invoke(NamedTuple):
    """One step of an effect: call ``func(*args, **kwargs)``; the asyncio runner awaits the
    result when it is awaitable. Its reply (or raw redis-py error) is sent back to the step."""

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


# What an effect's steps yield: calls, and `Gather`, which the runner fans out itself.
Steps: TypeAlias = Generator["Invoke | Gather", Any, T]


class Context(Protocol):
    """What the steps need of their runner."""

    clients: tuple[Any, ...]
    ready: bool

    @property
    def asynchronous(self) -> bool:
        """Whether the runner awaits what a step's call returns."""

    def initialize(self) -> Any:
        """Make every client ready (an asyncio cluster client learns its nodes once)."""


def _initialize(runner: Context) -> Steps[None]:
    with _COMMAND_ERRORS:
        yield Invoke(runner.initialize)
