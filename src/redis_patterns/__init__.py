"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.sessions import AsyncSessionStore
from ._core.sessions import Session
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
from ._script import Script
from ._serializers import Serializer
from ._server import EmbeddedCluster, EmbeddedServer, connect
from ._sync.bounded_counter import BoundedCounter
from ._sync.sessions import SessionStore
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncSessionStore",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "ConfigurationError",
    "CrossSlotError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "PermissionDeniedError",
    "QueueError",
    "RateLimitedError",
    "RedisPatternsError",
    "Script",
    "ScriptError",
    "ServerBusyError",
    "Serializer",
    "Session",
    "SessionStore",
    "StaleFenceError",
    "TransactionConflictError",
    "__version__",
    "connect",
]
