"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.ratelimit import (
    AsyncFixedWindow,
    AsyncGCRA,
    AsyncMultiLimit,
    AsyncRateLimiter,
    AsyncSlidingLog,
    AsyncSlidingWindow,
    AsyncTokenBucket,
)
from ._core.ratelimit import Decision
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
from ._sync.ratelimit import (
    GCRA,
    FixedWindow,
    MultiLimit,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncFixedWindow",
    "AsyncGCRA",
    "AsyncMultiLimit",
    "AsyncRateLimiter",
    "AsyncSlidingLog",
    "AsyncSlidingWindow",
    "AsyncTokenBucket",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "ConfigurationError",
    "CrossSlotError",
    "Decision",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FixedWindow",
    "GCRA",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "MultiLimit",
    "QueueError",
    "RateLimitedError",
    "RateLimiter",
    "RedisPatternsError",
    "Script",
    "ScriptError",
    "Serializer",
    "SlidingLog",
    "SlidingWindow",
    "StaleFenceError",
    "TokenBucket",
    "TransactionConflictError",
    "__version__",
    "connect",
]
