"""redis-patterns: the common Redis patterns, correct under concurrency, one round trip each."""

from ._async.bounded_counter import AsyncBoundedCounter
from ._async.pubsub import AsyncPublisher, AsyncSubscriber
from ._async.streams import AsyncStreamQueue, AsyncWorker
from ._core.pubsub import Gap, Message
from ._core.streams import (
    ConsumerInfo,
    DeadLetter,
    PendingSummary,
    StreamInfo,
    StreamMessage,
    WorkerStats,
    stop_on_signals,
)
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
from ._sync.pubsub import Publisher, Subscriber
from ._sync.streams import StreamQueue, Worker
from ._version import __version__

__all__ = [
    "AsyncBoundedCounter",
    "AsyncPublisher",
    "AsyncStreamQueue",
    "AsyncSubscriber",
    "AsyncWorker",
    "ConsumerInfo",
    "DeadLetter",
    "PendingSummary",
    "Publisher",
    "StreamInfo",
    "StreamMessage",
    "StreamQueue",
    "Subscriber",
    "Worker",
    "WorkerStats",
    "stop_on_signals",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BoundedCounter",
    "ConfigurationError",
    "CrossSlotError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "Gap",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "Message",
    "QueueError",
    "RateLimitedError",
    "RedisPatternsError",
    "Script",
    "ScriptError",
    "Serializer",
    "StaleFenceError",
    "TransactionConflictError",
    "__version__",
    "connect",
]
