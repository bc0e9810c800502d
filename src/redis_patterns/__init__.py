"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.cache import AsyncCache, AsyncCachedFunction
from ._async.cache_write import AsyncWriteBehind, AsyncWriteThrough
from ._async.leaderboard import AsyncLeaderboard, AsyncTimedLeaderboard
from ._async.sessions import AsyncSessionStore
from ._async.transaction import async_transaction
from ._core.cache import FlushResult, PendingWrite, WarmResult
from ._core.leaderboard import Entry, Page
from ._core.sessions import Session
from ._core.transaction import TransactionResult
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
    PermissionDeniedError,
    QueueError,
    RateLimitedError,
    RedisPatternsError,
    ScriptError,
    ServerBusyError,
    StaleFenceError,
    TransactionConflictError,
)
from ._functions import FunctionLibrary
from ._script import Script
from ._serializers import Serializer
from ._server import EmbeddedCluster, EmbeddedServer, connect
from ._sync.bounded_counter import BoundedCounter
from ._sync.cache import Cache, CachedFunction
from ._sync.cache_write import WriteBehind, WriteThrough
from ._sync.leaderboard import Leaderboard, TimedLeaderboard
from ._sync.sessions import SessionStore
from ._sync.transaction import transaction
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncCache",
    "AsyncCachedFunction",
    "AsyncLeaderboard",
    "AsyncSessionStore",
    "AsyncTimedLeaderboard",
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
    "Entry",
    "FlushResult",
    "FunctionLibrary",
    "Leaderboard",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "Page",
    "PendingWrite",
    "PermissionDeniedError",
    "QueueError",
    "RateLimitedError",
    "RedisPatternsError",
    "Script",
    "ScriptError",
    "Serializer",
    "ServerBusyError",
    "Session",
    "SessionStore",
    "StaleFenceError",
    "TimedLeaderboard",
    "TransactionConflictError",
    "TransactionResult",
    "WarmResult",
    "WriteBehind",
    "WriteThrough",
    "__version__",
    "async_transaction",
    "connect",
    "transaction",
]
