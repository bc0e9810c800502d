"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from . import metrics
from ._async.bounded_counter import AsyncBoundedCounter
from ._async.cache import AsyncCache, AsyncCachedFunction
from ._async.cache_write import AsyncWriteBehind, AsyncWriteThrough
from ._async.leaderboard import AsyncLeaderboard, AsyncTimedLeaderboard
from ._async.lock import AsyncFencedStore, AsyncLock
from ._async.pubsub import AsyncPublisher, AsyncSubscriber
from ._async.ratelimit import (
    AsyncFixedWindow,
    AsyncGCRA,
    AsyncMultiLimit,
    AsyncRateLimiter,
    AsyncSlidingLog,
    AsyncSlidingWindow,
    AsyncTokenBucket,
)
from ._async.redlock import AsyncRedlock
from ._async.sessions import AsyncSessionStore
from ._async.streams import AsyncStreamQueue, AsyncWorker
from ._async.transaction import async_transaction
from ._connect import connect
from ._core.cache_types import FOREVER, WarmResult
from ._core.cache_write import FlushResult, PendingWrite
from ._core.leaderboard import Entry, Page
from ._core.pubsub import Gap, Message
from ._core.ratelimit import Decision, QuotaPolicy
from ._core.sessions import Session, SessionChanges, SessionOutcome
from ._core.streams import (
    ConsumerInfo,
    DeadLetter,
    PendingEntry,
    PendingSummary,
    ReplayResult,
    StreamInfo,
    StreamMessage,
    WorkerStats,
)
from ._core.streams_worker import stop_on_signals
from ._core.transaction import TransactionResult
from ._embedded import EmbeddedServer
from ._embedded_cluster import EmbeddedCluster
from ._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CacheValueError,
    ConfigurationError,
    CrossSlotError,
    EmbeddedServerError,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    NotReplicatedError,
    PeriodExpiredError,
    PermissionDeniedError,
    QueueError,
    RateLimitedError,
    RedisPatternsError,
    RedisPatternsWarning,
    ScriptError,
    ServerBusyError,
    StaleFenceError,
    TransactionConflictError,
)
from ._redis_steps import autopipeline
from ._scripting import FunctionLibrary, Script
from ._sentinel import sentinel_client
from ._serializers import Serializer
from ._sync.bounded_counter import BoundedCounter
from ._sync.cache import Cache, CachedFunction
from ._sync.cache_write import WriteBehind, WriteThrough
from ._sync.leaderboard import Leaderboard, TimedLeaderboard
from ._sync.lock import FencedStore, Lock
from ._sync.pubsub import Publisher, Subscriber
from ._sync.ratelimit import (
    GCRA,
    FixedWindow,
    MultiLimit,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from ._sync.redlock import Redlock
from ._sync.sessions import SessionStore
from ._sync.streams import StreamQueue, Worker
from ._sync.transaction import transaction
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncCache",
    "AsyncCachedFunction",
    "AsyncFencedStore",
    "AsyncFixedWindow",
    "AsyncGCRA",
    "AsyncLeaderboard",
    "AsyncLock",
    "AsyncMultiLimit",
    "AsyncPublisher",
    "AsyncRateLimiter",
    "AsyncRedlock",
    "AsyncSessionStore",
    "AsyncSlidingLog",
    "AsyncSlidingWindow",
    "AsyncStreamQueue",
    "AsyncSubscriber",
    "AsyncTimedLeaderboard",
    "AsyncTokenBucket",
    "AsyncWorker",
    "AsyncWriteBehind",
    "AsyncWriteThrough",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "Cache",
    "CacheValueError",
    "CachedFunction",
    "ConfigurationError",
    "ConsumerInfo",
    "CrossSlotError",
    "DeadLetter",
    "Decision",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "Entry",
    "FOREVER",
    "FencedStore",
    "FixedWindow",
    "FlushResult",
    "FunctionLibrary",
    "GCRA",
    "Gap",
    "Leaderboard",
    "Lock",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "Message",
    "MultiLimit",
    "NotReplicatedError",
    "Page",
    "PendingEntry",
    "PendingSummary",
    "PendingWrite",
    "PeriodExpiredError",
    "PermissionDeniedError",
    "Publisher",
    "QueueError",
    "QuotaPolicy",
    "RateLimitedError",
    "RateLimiter",
    "RedisPatternsError",
    "RedisPatternsWarning",
    "Redlock",
    "ReplayResult",
    "Script",
    "ScriptError",
    "Serializer",
    "ServerBusyError",
    "Session",
    "SessionChanges",
    "SessionOutcome",
    "SessionStore",
    "SlidingLog",
    "SlidingWindow",
    "StaleFenceError",
    "StreamInfo",
    "StreamMessage",
    "StreamQueue",
    "Subscriber",
    "TimedLeaderboard",
    "TokenBucket",
    "TransactionConflictError",
    "TransactionResult",
    "WarmResult",
    "Worker",
    "WorkerStats",
    "WriteBehind",
    "WriteThrough",
    "__version__",
    "async_transaction",
    "autopipeline",
    "connect",
    "metrics",
    "sentinel_client",
    "stop_on_signals",
    "transaction",
]
