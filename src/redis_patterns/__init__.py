"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.cache import AsyncCache, AsyncCachedFunction
from ._async.cache_write import AsyncWriteBehind, AsyncWriteThrough
from ._core.cache import FlushResult, PendingWrite, WarmResult
from ._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    CrossSlotError,
    EmbeddedServerError,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    QueueError,
    RateLimitedError,
    RedisPatternsError,
    ScriptError,
    StaleFenceError,
    TransactionConflictError,
)
from ._script import Script
from ._serializers import Serializer
from ._server import EmbeddedCluster, EmbeddedServer, connect
from ._sync.bounded_counter import BoundedCounter
from ._sync.cache import Cache, CachedFunction
from ._sync.cache_write import WriteBehind, WriteThrough
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncCache",
    "AsyncCachedFunction",
    "AsyncWriteBehind",
    "AsyncWriteThrough",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "Cache",
    "CachedFunction",
    "ConfigurationError",
    "CrossSlotError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FlushResult",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "PendingWrite",
    "QueueError",
    "RateLimitedError",
    "RedisPatternsError",
    "Script",
    "ScriptError",
    "Serializer",
    "StaleFenceError",
    "TransactionConflictError",
    "WarmResult",
    "WriteBehind",
    "WriteThrough",
    "__version__",
    "connect",
]
