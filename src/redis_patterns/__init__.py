"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.lock import AsyncFencedStore, AsyncLock
from ._async.redlock import AsyncRedlock
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
from ._sync.lock import FencedStore, Lock
from ._sync.redlock import Redlock
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncFencedStore",
    "AsyncLock",
    "AsyncRedlock",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "ConfigurationError",
    "CrossSlotError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FencedStore",
    "Lock",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "QueueError",
    "RateLimitedError",
    "RedisPatternsError",
    "Redlock",
    "Script",
    "ScriptError",
    "Serializer",
    "StaleFenceError",
    "TransactionConflictError",
    "__version__",
    "connect",
]
