"""The exception hierarchy: every error this library raises is one of these (and its one warning).

    RedisPatternsError
    ├── ConfigurationError (also ValueError)   bad arguments, raised before any I/O
    │   ├── ConfigurationTypeError (also TypeError)   ... of the wrong type (not exported:
    │   │                                      catch ConfigurationError or TypeError)
    │   └── PeriodExpiredError                 a timed board's period is past its retention
    │                                          (the server's clock said so; nothing was written)
    ├── BackendError                           the server or the connection failed
    │   ├── BackendUnavailableError (also ConnectionError)   unreachable, or the server cannot
    │   │                                      run commands now (LOADING, CLUSTERDOWN, TRYAGAIN)
    │   │                                      or take writes (READONLY, NOREPLICAS)
    │   ├── BackendTimeoutError (also TimeoutError)   outcome unknown
    │   ├── ScriptError                        a script raised, or the server refused it
    │   │   └── ServerBusyError                another client's script is running too long (BUSY)
    │   ├── NotReplicatedError                 written on the primary, but too few replicas
    │   │                                      confirmed it in time (``wait_replicas``)
    │   ├── PermissionDeniedError (also PermissionError)   the ACL user may not do this (NOPERM)
    │   └── CrossSlotError                     keys of one operation live in different slots
    ├── LockError
    │   ├── LockTimeoutError (also TimeoutError)
    │   ├── LockNotOwnedError
    │   └── StaleFenceError
    ├── CacheValueError (also TypeError)       incr/decr of a cached value that is not an integer
    ├── RateLimitedError                       carries retry_after
    ├── TransactionConflictError               the WATCH retry budget ran out
    ├── QueueError                             a queue's data is not what the queue wrote
    │   └── QueueKeyTypeError (also BackendError)   a queue key holds another type (WRONGTYPE)
    │       └── QueueScriptKeyTypeError (also ScriptError)   ... found by a queue's script
    │                                          (both not exported: catch QueueError, or the
    │                                          BackendError / ScriptError they also are)
    └── EmbeddedServerError (also RuntimeError) an embedded server failed to start

    RedisPatternsWarning (a UserWarning)       a client that can apply a call twice or hang

redis-py's exceptions are converted in exactly one place, ``_redis.backend_errors`` (which asks
``_redis.map_backend_error``), with the original kept as ``__cause__``; this module itself imports
no I/O library.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CacheValueError",
    "ConfigurationError",
    "ConfigurationTypeError",
    "CrossSlotError",
    "EmbeddedServerError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "NotReplicatedError",
    "PeriodExpiredError",
    "PermissionDeniedError",
    "QueueError",
    "QueueKeyTypeError",
    "QueueScriptKeyTypeError",
    "RateLimitedError",
    "RedisPatternsError",
    "RedisPatternsWarning",
    "ScriptError",
    "ServerBusyError",
    "StaleFenceError",
    "TransactionConflictError",
]


class RedisPatternsError(Exception):
    """Base class of every error raised by redis-patterns."""


class ConfigurationError(RedisPatternsError, ValueError):
    """An argument is invalid; raised before anything is sent to the server."""


class ConfigurationTypeError(ConfigurationError, TypeError):
    """An argument has the wrong type (a str for a number, a non-callable callback, ...).

    Still a `ConfigurationError` (so a ``ValueError``), and also a ``TypeError``, which is what
    Python raises for a wrong type: code catching either one sees it. The validators in
    ``_validate`` raise it for every type check.
    """


class PeriodExpiredError(ConfigurationError):
    """A `TimedLeaderboard` write named a period whose retention (``keep``) has already ended.

    The exception to "before any I/O": only the server's clock (``TIME`` inside the write
    script) decides it, and the script checks before writing, so nothing was stored. ``period``
    is the period's label (``2026-11-26``, ``2026-W48``, ``2026-11``), ``retention_end`` the UTC
    instant its board expired at, ``server_time`` the server's clock when it refused.
    """

    def __init__(
        self, message: str, *, period: str, retention_end: datetime, server_time: datetime
    ) -> None:
        super().__init__(message)
        self.period = period
        self.retention_end = retention_end
        self.server_time = server_time


class BackendError(RedisPatternsError):
    """The server or the connection to it failed; the redis-py error is the ``__cause__``."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The server could not be reached or the connection broke, or the server refused to run
    the command right now: ``LOADING`` (it is loading its dataset), ``CLUSTERDOWN`` (the cluster
    does not serve the slot), ``MASTERDOWN``, ``TRYAGAIN`` (a slot is migrating), ``UNBLOCKED``
    (a blocking read ended before reading, e.g. its stream moved), a cluster that kept
    redirecting it; or refused a write: ``READONLY`` (a replica, e.g. a primary demoted by a
    failover), ``NOREPLICAS`` (fewer good replicas than ``min-replicas-to-write``). For these
    refusals nothing ran; for a broken connection the outcome may be unknown."""


class BackendTimeoutError(BackendError, TimeoutError):
    """No reply in time: the command may or may not have run on the server (outcome unknown)."""


class ScriptError(BackendError):
    """A script raised an error on the server, or the server refused to run it."""


class ServerBusyError(ScriptError):
    """The server is running a script (another client's, maybe) past ``busy-reply-threshold``.

    Nothing was executed for this call; it can be retried once that script ends or is stopped
    with ``SCRIPT KILL`` (or ``FUNCTION KILL``).
    """


class NotReplicatedError(BackendError):
    """A write asked to wait for replicas (``wait_replicas``) was applied on the primary, but
    fewer replicas than asked confirmed it within the timeout.

    The write is on the primary and will normally reach the replicas; but a failover now could
    promote one that never got it, and the write would be gone. ``confirmed`` and ``wanted``
    are the counts. Retrying is safe where the write is idempotent.
    """

    def __init__(self, message: str, *, confirmed: int, wanted: int) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.wanted = wanted


class PermissionDeniedError(BackendError, PermissionError):
    """The server's ACL refused the command or a key for this user (``NOPERM``); nothing ran."""


class CrossSlotError(BackendError):
    """The keys of one operation hash to different cluster slots; give them a common ``{tag}``."""


class LockError(RedisPatternsError):
    """Base class of lock errors."""


class LockTimeoutError(LockError, TimeoutError):
    """The lock was not acquired within the time allowed."""


class LockNotOwnedError(LockError):
    """The lock is not (or no longer) held by this owner: it expired, was lost or was never ours."""


class StaleFenceError(LockError):
    """A write carried a fencing token lower than one the resource already accepted."""


class CacheValueError(RedisPatternsError, TypeError):
    """The cached value does not support the operation: `incr`/`decr` of a value that is not an
    integer, or whose result would leave ±(2**53 - 1); the entry is left unchanged."""


class RateLimitedError(RedisPatternsError):
    """The rate limit refused the request; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransactionConflictError(RedisPatternsError):
    """A watched key kept changing until the retry budget ran out."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class QueueError(RedisPatternsError):
    """A stream queue's data is not what the queue wrote: one of its keys holds another type,
    or an entry of its dead-letter stream lacks the queue's records (another program wrote it)."""


class QueueKeyTypeError(QueueError, BackendError):
    """A key of the queue holds another type of value: the server refused a command with
    ``WRONGTYPE`` (its error is the ``__cause__``); nothing was changed."""


class QueueScriptKeyTypeError(QueueKeyTypeError, ScriptError):
    """A `QueueKeyTypeError` found by one of the queue's scripts, so also a `ScriptError`, as
    the refusal was before it became a `QueueError`."""


class EmbeddedServerError(RedisPatternsError, RuntimeError):
    """An embedded server could not be started; the message carries its log tail."""


class RedisPatternsWarning(UserWarning):
    """A client given to a pattern is configured so that a call can be applied twice or hang.

    Issued once per client: it re-sends commands after a connection error or a timeout
    (redis-py's default ``Retry``), or it has no ``socket_timeout``. `connect` builds clients
    that do neither.
    """
