"""The two drivers that perform a plan's effects: `SyncRunner` (blocking) and `AsyncRunner`.

This is the only layer that talks to redis-py; it converts redis-py's errors to the library's
in one place (`map_backend_error`) and throws them into the plan at the failed ``yield``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeAlias, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions as rex
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _background
from ._clients import read_timeout, warn_if_risky
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
from ._logging import coalesced
from ._plan import (
    Call,
    Command,
    Effect,
    Eval,
    FCall,
    Features,
    Gather,
    KeyT,
    Now,
    Pipeline,
    Plan,
    Replicated,
    Sleep,
    Transaction,
    TransactionAttempt,
)

__all__ = [
    "AsyncClient",
    "AsyncListener",
    "AsyncPipeline",
    "AsyncRunner",
    "AsyncTransactionFunction",
    "SyncClient",
    "SyncListener",
    "SyncPipeline",
    "SyncRunner",
    "TransactionFunction",
    "client_features",
    "map_backend_error",
    "node_in_turn",
    "node_address",
    "require_bytes_replies",
    "runner_for",
]

log = logging.getLogger("redis_patterns")

T = TypeVar("T")

SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
SyncPipeline: TypeAlias = "redis.client.Pipeline | redis.cluster.ClusterPipeline"
AsyncPipeline: TypeAlias = "redis.asyncio.client.Pipeline | redis.asyncio.cluster.ClusterPipeline"
# The body of a WATCH transaction: reads on the pipeline, then pipe.multi() and queued writes.
TransactionFunction: TypeAlias = "Callable[[SyncPipeline], T]"
AsyncTransactionFunction: TypeAlias = "Callable[[AsyncPipeline], Awaitable[T]]"

_SYNC_TYPES = (redis.Redis, redis.cluster.RedisCluster)
_ASYNC_TYPES = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
_CLUSTER_TYPES = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


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


def _check_slots(client: object, keys: Sequence[KeyT]) -> None:
    """Refuse, before any I/O, keys that a cluster would spread over several slots."""
    if len(keys) > 1 and isinstance(client, _CLUSTER_TYPES):
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        if len(slots) > 1:
            raise CrossSlotError(
                f"keys {list(keys)!r} hash to {len(slots)} different cluster slots; give them a "
                "common hash tag, e.g. '{user:42}:a' and '{user:42}:b'"
            )


def _eval_args(effect: Eval) -> tuple[Any, ...]:
    return (len(effect.keys), *effect.keys, *effect.args)


def _in_multi(pipe: Any) -> bool:
    """Whether ``fn`` called ``pipe.multi()`` (redis-py keeps the flag per pipeline kind)."""
    strategy = getattr(pipe, "_execution_strategy", None)  # cluster pipelines
    if strategy is not None:
        return bool(getattr(strategy, "_explicit_transaction", False))
    return bool(getattr(pipe, "explicit_transaction", False))


# redis-py raises WatchError for three different things; only the first two are conflicts.
_CONFLICTS = ("Watched variable changed", "Slot rebalancing")
# A slot that moved while we were reading (resharding): the client has learnt the new owner,
# so the attempt is retried from WATCH like a conflict.
_MOVED = (rex.MovedError, rex.AskError, rex.TryAgainError)


def _no_silent_reconnect(pipe: Any) -> None:
    """Make connection errors surface from a cluster transaction pipeline.

    redis-py's cluster ``TransactionStrategy`` (8.1) retries a command after a connection error
    on a *new* connection, which has not WATCHed anything: the optimistic check would silently
    vanish and EXEC could overwrite a concurrent write. Its retry object is a private per-pipeline
    copy; with no retries the error reaches us, and the plan retries from WATCH (or reports
    outcome unknown). Standalone pipelines raise on their own.
    """
    retry = getattr(getattr(pipe, "_execution_strategy", None), "_retry", None)
    if retry is not None:
        retry.update_retries(0)


def _connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, WatchError):
        return not str(exc).startswith(_CONFLICTS)  # "A ConnectionError occurred while watching"
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def _forget_watch(pipe: Any) -> None:
    """After its connection failed, let a pipeline go without UNWATCH.

    redis-py's reset sends UNWATCH when it thinks it is still watching, on the same connection
    object, which reconnects to its old address: a Sentinel-managed connection then bypasses
    the Sentinels and, after a failover, settles on the demoted primary for good (every later
    transaction failed at EXEC with READONLY). A closed connection watches nothing anyway.
    """
    connection = getattr(pipe, "connection", None)  # standalone pipelines only
    if connection is not None:
        pipe.watching = False
        connection.disconnect()


def _unwatch_with_exec(pipe: Any) -> None:
    """EXEC ends the WATCH on the server, and a failed connection watches nothing: tell the
    pipeline so, or its reset after a failed EXEC sends UNWATCH (see `_forget_watch`). A
    conflict is still reported (EXEC's nil reply), and so is a lost connection."""
    if getattr(pipe, "connection", None) is not None:
        pipe.watching = False


async def _aforget_watch(pipe: Any) -> None:
    """`_forget_watch` for asyncio pipelines."""
    connection = getattr(pipe, "connection", None)
    if connection is not None:
        pipe.watching = False
        await connection.disconnect()


# After these a cluster client's map may name a node that is gone or no longer owns the slot.
_STALE_MAP = (
    RedisConnectionError,
    RedisTimeoutError,
    rex.ClusterDownError,
    rex.SlotNotCoveredError,
)


def _cluster_refresh(
    client: object, exc: BaseException, keys: Sequence[KeyT]
) -> dict[str, Any] | None:
    """The arguments to refresh ``client``'s cluster map with after a failed transaction, or
    ``None`` when there is nothing to refresh.

    redis-py refreshes the map itself after a plain command's connection error, but its cluster
    transaction pipeline does so only on every 5th error *of one pipeline object* (sync 8.1)
    or of the client (asyncio), and a transaction uses a new pipeline each time: after a master
    was killed, every later transaction went to the dead node until some plain command
    refreshed the map. Refreshing is a read (``CLUSTER SLOTS``; the node that just failed is
    asked last); the failed attempt is never re-sent, so the outcome-unknown rule holds.
    """
    if not isinstance(client, _CLUSTER_TYPES) or not isinstance(exc, _STALE_MAP):
        return None
    cluster: Any = client
    failed = None
    with contextlib.suppress(*REDIS_ERRORS):
        failed = cluster.get_node_from_key(keys[0]).name if keys else None
    return {"last_failed_node_name": failed}


def _transaction_error(exc: Exception, phase: str) -> BaseException | None:
    """``None`` for a WATCH conflict (retry from WATCH); otherwise the error to raise.

    redis-py also raises WatchError when the connection dies while keys are watched. Before
    EXEC nothing was applied; during EXEC the server may have committed, so that is an
    outcome-unknown error, never a conflict to replay.
    """
    if isinstance(exc, WatchError) and str(exc).startswith(_CONFLICTS):
        return None
    if isinstance(exc, _MOVED) and phase != "exec":
        return None
    lost = isinstance(exc, WatchError | RedisConnectionError | RedisTimeoutError)
    if lost and phase == "exec":
        return BackendTimeoutError(
            f"the connection failed during EXEC; the transaction may or may not have been "
            f"applied (outcome unknown): {exc}"
        )
    if lost:
        return BackendUnavailableError(
            f"the connection failed before EXEC; nothing was applied: {exc}"
        )
    return map_backend_error(exc)


def _function_not_found(exc: RedisError) -> bool:
    return isinstance(exc, rex.ResponseError) and "function not found" in str(exc).lower()


def _fcall_options(client: Any, keys: Sequence[KeyT]) -> dict[str, Any]:
    """Route FCALL on a cluster by its first key; otherwise redis-py asks the server for the
    keys (``COMMAND GETKEYS``), an extra round trip per call."""
    if keys and isinstance(client, _CLUSTER_TYPES):
        cluster: Any = client  # redis-py types the key as str; bytes work the same
        return {"target_nodes": cluster.get_node_from_key(keys[0])}
    return {}


def _command_options(client: Any, args: Sequence[Any]) -> dict[str, Any]:
    """Send a plain ``PUBLISH`` on a cluster to the client's default node, every time.

    redis-py would send it to the node owning the channel's slot. A message run on another node
    than the subscriber's reaches it over the cluster bus a moment later than one run on its own
    node, so one publisher's messages to two channels could overtake each other, and one
    published before a subscription was confirmed could still reach it (both seen under load).
    `Subscriber` links to the same default node first, so a client's publishes and
    subscriptions meet there.
    """
    if args and args[0] == "PUBLISH" and isinstance(client, _CLUSTER_TYPES):
        return {"target_nodes": "default-node"}  # RedisCluster.DEFAULT_NODE, sync and asyncio
    return {}


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


def _decodes(client: object) -> bool:
    encoder = getattr(client, "get_encoder", None)
    return bool(encoder is not None and getattr(encoder(), "decode_responses", False))


def require_bytes_replies(runner: SyncRunner | AsyncRunner, why: str) -> None:
    """Refuse, before any I/O, clients made with ``decode_responses=True`` for a pattern whose
    replies must stay bytes; ``why`` says what the pattern stores."""
    if runner.decodes_responses:
        raise ConfigurationError(
            f"the client was created with decode_responses=True; {why}: use a client with "
            "decode_responses=False"
        )


def _describe(client: object) -> str:
    return type(client).__module__ + "." + type(client).__qualname__


class SyncRunner:
    """Performs effects with a blocking redis-py client (or several, for fan-out patterns)."""

    # Lets a plan refuse, before any I/O, a callback of the wrong flavour.
    asynchronous: ClassVar[bool] = False

    def __init__(self, clients: SyncClient | Sequence[SyncClient]) -> None:
        self.clients: tuple[SyncClient, ...] = _as_tuple(clients, _SYNC_TYPES, "a sync")
        warn_if_risky(self.clients)
        self.cluster = isinstance(self.clients[0], _CLUSTER_TYPES)
        # What the (first) client's server supports, as its plans have learnt it.
        self.features = client_features(self.clients[0])
        # Patterns that store binary payloads need bytes back (decode_responses=False).
        self.decodes_responses = any(_decodes(c) for c in self.clients)
        # A blocking read (XREADGROUP BLOCK) must return before the socket gives up on it.
        self.read_timeout = read_timeout(self.clients[0])

    def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        try:
            effect = next(plan)
            while True:
                try:
                    result = self.perform(effect)
                except BaseException as exc:
                    effect = plan.throw(exc)
                else:
                    effect = plan.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            plan.close()

    def run_shielded(self, plan: Plan[T]) -> T:
        """`run`; the asyncio twin finishes the plan even when the caller is cancelled."""
        return self.run(plan)

    def repeat(
        self,
        job: _background.SyncJob[T],
        owner: T,
        delay: float,
        *,
        dropped: str | None = None,
    ) -> _background.Handle:
        """Run ``job(owner)`` after ``delay`` s on the process's one shared background thread.

        ``job`` returns the delay until its next run, or ``None`` to stop. ``owner`` is held
        weakly: once it is collected the job stops (warning ``dropped``, if given).
        """
        return _background.thread_ticker().add(job, owner, delay, dropped=dropped)

    def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        if isinstance(effect, Eval):
            client: Any = self.clients[effect.node or 0]  # redis-py's union is partly untyped
            _check_slots(client, effect.keys)
            try:
                try:
                    return client.execute_command("EVALSHA", effect.script.sha, *_eval_args(effect))
                except NoScriptError:
                    return client.execute_command("EVAL", effect.script.source, *_eval_args(effect))
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, FCall):
            client = self.clients[effect.node or 0]
            _check_slots(client, effect.keys)
            args = ("FCALL", effect.function, len(effect.keys), *effect.keys, *effect.args)
            options = _fcall_options(client, effect.keys)
            try:
                try:
                    return client.execute_command(*args, **options)
                except RedisError as exc:
                    if not _function_not_found(exc):
                        raise
                    client.execute_command(*effect.library.load_command().args)
                    return client.execute_command(*args, **options)
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, Command):
            try:
                target: Any = self.clients[effect.node or 0]
                return target.execute_command(*effect.args, **_command_options(target, effect.args))
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc) from exc
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Now):
            return time.monotonic()
        if isinstance(effect, Gather):
            return self._gather(effect)
        if isinstance(effect, Transaction):
            return self._transaction(effect)
        if isinstance(effect, Call):
            result = effect.func(*effect.args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise ConfigurationError(
                    f"{effect.func!r} returned an awaitable: async callables need the async class"
                )
            return result
        if isinstance(effect, Pipeline):
            return self._pipeline(effect)
        if isinstance(effect, Replicated):
            return self._replicated(effect)
        raise TypeError(f"unknown effect {effect!r}")

    def _replicated(self, effect: Replicated) -> tuple[Any, int]:
        client: Any = self.clients[0]
        wait, items = _wait_args(effect), (effect.write, Command(_wait_args(effect)))
        first = [_pipeline_args(effect.write, sha=True), wait]
        replies = _run_sync_pipeline(client, first, items)
        if isinstance(replies[0], NoScriptError):  # WAIT must follow the write that ran
            again = [_pipeline_args(effect.write, sha=False), wait]
            replies = _run_sync_pipeline(client, again, items)
        return _replicated_result(effect, replies)

    def _transaction(self, effect: Transaction) -> TransactionAttempt:
        client: Any = self.clients[effect.node or 0]
        _check_slots(client, effect.watch)
        phase = "watch"
        try:
            with client.pipeline(transaction=True) as pipe:
                try:
                    _no_silent_reconnect(pipe)
                    if effect.watch:
                        pipe.watch(*effect.watch)
                    phase = "fn"
                    value = effect.fn(pipe)
                    if inspect.isawaitable(value):
                        close = getattr(value, "close", None)
                        if close is not None:
                            close()  # don't leave a never-awaited coroutine behind
                        raise TypeError(
                            "fn returned an awaitable: use async_transaction for async fn"
                        )
                    if not _in_multi(pipe):
                        return TransactionAttempt(True, value, None)
                    phase = "exec"
                    _unwatch_with_exec(pipe)
                    return TransactionAttempt(True, value, list(pipe.execute()))
                except REDIS_ERRORS as exc:
                    if _connection_lost(exc):
                        _forget_watch(pipe)
                    raise
        except REDIS_ERRORS as exc:
            refresh = _cluster_refresh(client, exc, effect.watch)
            if refresh is not None:
                with contextlib.suppress(*REDIS_ERRORS, OSError):
                    client.nodes_manager.initialize(**refresh)
            error = _transaction_error(exc, phase)
            if error is None:
                return TransactionAttempt(False)
            raise error from exc

    def _pipeline(self, effect: Pipeline) -> list[Any]:
        client: Any = self.clients[0]
        for item in effect.effects:
            if isinstance(item, Eval):
                _check_slots(client, item.keys)
        results: list[Any] = _run_sync_pipeline(
            client, [_pipeline_args(e, sha=True) for e in effect.effects], effect.effects
        )
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            again = _run_sync_pipeline(
                client,
                [_pipeline_args(effect.effects[i], sha=False) for i in retry],
                [effect.effects[i] for i in retry],
            )
            for index, result in zip(retry, again, strict=True):
                results[index] = result
        return [_map_item(e, r) for e, r in zip(effect.effects, results, strict=True)]

    def spawn(self, plan: Plan[Any]) -> None:
        """Run ``plan`` in a background daemon thread; its failure is logged, not raised."""

        def target() -> None:
            try:
                self.run(plan)
            except Exception:
                log.exception("background plan failed")

        threading.Thread(target=target, daemon=True, name="redis-patterns-background").start()

    def listen(
        self,
        channel: bytes,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
    ) -> SyncListener:
        """Subscribe to ``channel`` in a background thread (see `SyncListener`)."""
        return SyncListener(self.clients[0], channel, on_message, on_state)

    def _gather(self, effect: Gather) -> list[Any]:
        # One short-lived daemon thread per effect rather than a fixed pool: a call stuck on a
        # hung server (until its socket timeout) must not delay the next fan-out's calls to
        # healthy servers, nor keep the interpreter from exiting.
        futures: list[concurrent.futures.Future[Any]] = []
        for sub in effect.effects:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()
            thread = threading.Thread(
                target=self._perform_into,
                args=(sub, future),
                name="redis-patterns-gather",
                daemon=True,
            )
            thread.start()
            futures.append(future)
        concurrent.futures.wait(futures, timeout=effect.timeout)
        results: list[Any] = []
        for future in futures:
            if not future.done():
                results.append(BackendTimeoutError("no reply within the fan-out timeout"))
            elif (error := future.exception()) is not None:
                results.append(error)
            else:
                results.append(future.result())
        return results

    def _perform_into(self, effect: Effect, future: concurrent.futures.Future[Any]) -> None:
        try:
            future.set_result(self.perform(effect))
        except BaseException as exc:
            future.set_exception(exc)


class AsyncRunner:
    """Performs effects with an asyncio redis-py client (or several, for fan-out patterns)."""

    asynchronous: ClassVar[bool] = True

    def __init__(self, clients: AsyncClient | Sequence[AsyncClient]) -> None:
        self.clients: tuple[AsyncClient, ...] = _as_tuple(clients, _ASYNC_TYPES, "an asyncio")
        warn_if_risky(self.clients)
        self.cluster = isinstance(self.clients[0], _CLUSTER_TYPES)
        self.features = client_features(self.clients[0])
        # Patterns that store binary payloads need bytes back (decode_responses=False).
        self.decodes_responses = any(_decodes(c) for c in self.clients)
        # A blocking read (XREADGROUP BLOCK) must return before the socket gives up on it.
        self.read_timeout = read_timeout(self.clients[0])
        self._ready = not self.cluster
        self._ready_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        try:
            effect = next(plan)
            while True:
                try:
                    result = await self.perform(effect)
                except BaseException as exc:
                    effect = plan.throw(exc)
                else:
                    effect = plan.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            plan.close()

    async def _initialize(self) -> None:
        # A cold asyncio cluster client hit by many concurrent first commands initializes
        # several times at once, and redis-py then drops connections other tasks are still
        # opening (AttributeError on a None writer). Initialize once, behind a lock.
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if not self._ready:
                for client in self.clients:
                    try:
                        await client.initialize()
                    except REDIS_ERRORS as exc:
                        raise map_backend_error(exc) from exc
                self._ready = True

    async def run_shielded(self, plan: Plan[T]) -> T:
        """`run`, shielded from cancellation: a cancelled caller gets ``CancelledError`` at once
        while the plan still runs to its end (e.g. a lock release is neither half done nor
        forgotten)."""
        task = asyncio.ensure_future(self.run(plan))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_retrieve)
            raise

    def repeat(
        self,
        job: _background.AsyncJob[T],
        owner: T,
        delay: float,
        *,
        dropped: str | None = None,
    ) -> _background.Handle:
        """Run ``await job(owner)`` after ``delay`` s on the running loop's one shared task.

        ``job`` returns the delay until its next run, or ``None`` to stop. ``owner`` is held
        weakly: once it is collected the job stops (warning ``dropped``, if given).
        """
        return _background.loop_ticker().add(job, owner, delay, dropped=dropped)

    async def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        if not self._ready and isinstance(effect, Eval | Command | Pipeline):
            await self._initialize()
        if isinstance(effect, Eval):
            client = self.clients[effect.node or 0]
            _check_slots(client, effect.keys)
            try:
                try:
                    return await client.execute_command(
                        "EVALSHA", effect.script.sha, *_eval_args(effect)
                    )
                except NoScriptError:
                    return await client.execute_command(
                        "EVAL", effect.script.source, *_eval_args(effect)
                    )
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, FCall):
            client = self.clients[effect.node or 0]
            _check_slots(client, effect.keys)
            args = ("FCALL", effect.function, len(effect.keys), *effect.keys, *effect.args)
            options = _fcall_options(client, effect.keys)
            try:
                try:
                    return await client.execute_command(*args, **options)
                except RedisError as exc:
                    if not _function_not_found(exc):
                        raise
                    await client.execute_command(*effect.library.load_command().args)
                    return await client.execute_command(*args, **options)
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, Command):
            try:
                target = self.clients[effect.node or 0]
                options = _command_options(target, effect.args)
                return await target.execute_command(*effect.args, **options)
            except REDIS_ERRORS as exc:
                raise map_backend_error(exc) from exc
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Now):
            return time.monotonic()
        if isinstance(effect, Gather):
            return await self._gather(effect)
        if isinstance(effect, Transaction):
            return await self._transaction(effect)
        if isinstance(effect, Call):
            result = effect.func(*effect.args)
            if inspect.isawaitable(result):
                result = await result
            return result
        if isinstance(effect, Pipeline):
            return await self._pipeline(effect)
        if isinstance(effect, Replicated):
            return await self._replicated(effect)
        raise TypeError(f"unknown effect {effect!r}")

    async def _replicated(self, effect: Replicated) -> tuple[Any, int]:
        client: Any = self.clients[0]
        wait, items = _wait_args(effect), (effect.write, Command(_wait_args(effect)))
        first = [_pipeline_args(effect.write, sha=True), wait]
        replies = await _run_async_pipeline(client, first, items)
        if isinstance(replies[0], NoScriptError):
            again = [_pipeline_args(effect.write, sha=False), wait]
            replies = await _run_async_pipeline(client, again, items)
        return _replicated_result(effect, replies)

    async def _transaction(self, effect: Transaction) -> TransactionAttempt:
        client: Any = self.clients[effect.node or 0]
        _check_slots(client, effect.watch)
        phase = "watch"
        try:
            async with client.pipeline(transaction=True) as pipe:
                try:
                    _no_silent_reconnect(pipe)
                    if effect.watch:
                        await pipe.watch(*effect.watch)
                    phase = "fn"
                    value = effect.fn(pipe)
                    if inspect.isawaitable(value):
                        value = await value
                    if not _in_multi(pipe):
                        return TransactionAttempt(True, value, None)
                    phase = "exec"
                    _unwatch_with_exec(pipe)
                    return TransactionAttempt(True, value, list(await pipe.execute()))
                except REDIS_ERRORS as exc:
                    if _connection_lost(exc):
                        await _aforget_watch(pipe)
                    raise
        except REDIS_ERRORS as exc:
            refresh = _cluster_refresh(client, exc, effect.watch)
            if refresh is not None:
                with contextlib.suppress(*REDIS_ERRORS, OSError):
                    await client.nodes_manager.initialize(**refresh)
            error = _transaction_error(exc, phase)
            if error is None:
                return TransactionAttempt(False)
            raise error from exc

    async def _pipeline(self, effect: Pipeline) -> list[Any]:
        client: Any = self.clients[0]
        for item in effect.effects:
            if isinstance(item, Eval):
                _check_slots(client, item.keys)
        results: list[Any] = await _run_async_pipeline(
            client, [_pipeline_args(e, sha=True) for e in effect.effects], effect.effects
        )
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            again = await _run_async_pipeline(
                client,
                [_pipeline_args(effect.effects[i], sha=False) for i in retry],
                [effect.effects[i] for i in retry],
            )
            for index, result in zip(retry, again, strict=True):
                results[index] = result
        return [_map_item(e, r) for e, r in zip(effect.effects, results, strict=True)]

    def spawn(self, plan: Plan[Any]) -> None:
        """Run ``plan`` as a background task of the running loop; its failure is logged."""

        async def target() -> None:
            try:
                await self.run(plan)
            except Exception:
                log.exception("background plan failed")

        task = asyncio.ensure_future(target())
        self._tasks.add(task)  # a strong reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    def listen(
        self,
        channel: bytes,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
    ) -> AsyncListener:
        """Subscribe to ``channel`` in a background task of the running loop."""
        return AsyncListener(self.clients[0], channel, on_message, on_state)

    async def _gather(self, effect: Gather) -> list[Any]:
        tasks = [asyncio.ensure_future(self.perform(e)) for e in effect.effects]
        await asyncio.wait(tasks, timeout=effect.timeout)
        results: list[Any] = []
        for task in tasks:
            if not task.done():
                task.cancel()
                results.append(BackendTimeoutError("no reply within the fan-out timeout"))
            elif (error := task.exception()) is not None:
                results.append(error)
            else:
                results.append(task.result())
        return results


def _pipeline_args(effect: Eval | Command, *, sha: bool) -> tuple[Any, ...]:
    if isinstance(effect, Command):
        return effect.args
    if sha:
        return ("EVALSHA", effect.script.sha, *_eval_args(effect))
    return ("EVAL", effect.script.source, *_eval_args(effect))


def _wait_args(effect: Replicated) -> tuple[Any, ...]:
    return ("WAIT", effect.replicas, effect.timeout_ms)


def _replicated_result(effect: Replicated, replies: list[Any]) -> tuple[Any, int]:
    reply, acked = replies
    for item, result in ((effect.write, reply), (Command(_wait_args(effect)), acked)):
        mapped = _map_item(item, result)
        if isinstance(mapped, BaseException):
            raise mapped
    return reply, int(acked)


def _pipeline_options(client: Any, effect: Eval | Command) -> dict[str, Any]:
    """Route a pipelined script call on a cluster by its first key: redis-py's cluster pipeline
    (8.x) otherwise asks the server for the keys of each EVALSHA (``COMMAND GETKEYS``), one
    extra round trip per item, one after the other."""
    if isinstance(effect, Eval) and effect.keys and isinstance(client, _CLUSTER_TYPES):
        cluster: Any = client  # redis-py types the key as str; bytes work the same
        return {"target_nodes": cluster.get_node_from_key(effect.keys[0])}
    return {}


def _run_sync_pipeline(
    client: Any, commands: list[tuple[Any, ...]], effects: Sequence[Eval | Command]
) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for args, effect in zip(commands, effects, strict=True):
        pipe.execute_command(*args, **_pipeline_options(client, effect))
    try:
        return list(pipe.execute(raise_on_error=False))
    except REDIS_ERRORS as exc:
        raise map_backend_error(exc) from exc


async def _run_async_pipeline(
    client: Any, commands: list[tuple[Any, ...]], effects: Sequence[Eval | Command]
) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for args, effect in zip(commands, effects, strict=True):
        pipe.execute_command(*args, **_pipeline_options(client, effect))
    try:
        return list(await pipe.execute(raise_on_error=False))
    except REDIS_ERRORS as exc:
        raise map_backend_error(exc) from exc


def _map_item(effect: Eval | Command, result: Any) -> Any:
    if isinstance(result, RedisError):
        error = map_backend_error(result, in_script=isinstance(effect, Eval))
        error.__cause__ = result
        return error
    return result


class _ListenerBase:
    """Shared state of the pub/sub listeners: health, and the callbacks."""

    def __init__(
        self,
        channel: bytes,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
    ) -> None:
        self.channel = channel
        self._on_message = on_message
        self._on_state = on_state
        self.healthy = False
        self.reconnects = 0
        self._closed = False

    def _set_state(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                self.reconnects += 1
        # Called on every (re)subscription too: messages may have been missed in between.
        self._on_state(healthy)

    def _lost(self, exc: Exception) -> None:
        message = "listener on %r lost its connection: %s"
        coalesced(log, ("listener", self.channel), message, self.channel, exc)
        self._set_state(False)

    def _handle(self, message: Any) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self._set_state(True)
        elif kind == "message":
            data = message.get("data")
            self._on_message(data if isinstance(data, bytes) else str(data).encode())


def node_in_turn(default: Any, primaries: list[Any], failures: int) -> Any:
    """The cluster node to listen on after ``failures`` failed attempts: the default node
    first, then each other primary in turn, so a listener whose node died moves to one that
    serves (a near cache's listener, a subscriber's main link)."""
    order = [default, *(node for node in primaries if node != default)]
    return order[failures % len(order)]


def _node_client_sync(client: Any, failures: int = 0) -> Any:
    if isinstance(client, redis.cluster.RedisCluster):
        # A plain PUBLISH reaches every node of a cluster, so any one node will do.
        node = node_in_turn(client.get_default_node(), client.get_primaries(), failures)
        return node.redis_connection
    return client


async def _node_client_async(client: Any, failures: int = 0) -> Any:
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()  # a new cluster client learns its nodes on first use
        node = node_in_turn(client.get_default_node(), client.get_primaries(), failures)
        pool = redis.asyncio.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs
        )
        return redis.asyncio.Redis(connection_pool=pool)
    return client


class SyncListener(_ListenerBase):
    """A pub/sub subscription served by a daemon thread, resubscribing after a failure.

    ``on_state(True)`` is called after each (re)subscription and ``on_state(False)`` when the
    connection fails: messages published in between are lost (pub/sub is at most once), so the
    caller must treat both as "anything may have changed".
    """

    def __init__(
        self,
        client: Any,
        channel: bytes,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
    ) -> None:
        super().__init__(channel, on_message, on_state)
        self._source = client
        self._failures = 0
        self._client = _node_client_sync(client)
        self._thread = threading.Thread(target=self._run, daemon=True, name="redis-patterns-listen")
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._closed:
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None:
                        self._handle(message)
                        backoff = 0.05
            except Exception as exc:  # whatever broke, resubscribe: the thread must not die
                if self._closed:
                    break
                self._lost(exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._failures += 1
                with contextlib.suppress(*REDIS_ERRORS):  # on a cluster, try the next node
                    self._client = _node_client_sync(self._source, self._failures)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
        self._set_state(False)

    def alive(self) -> bool:
        """Whether the listening thread still runs."""
        return self._thread.is_alive() and not self._closed

    def close(self) -> None:
        """Stop listening (waits up to a second for the thread)."""
        self._closed = True
        self._thread.join(timeout=1.0)


class AsyncListener(_ListenerBase):
    """A pub/sub subscription served by an asyncio task; see `SyncListener`."""

    def __init__(
        self,
        client: Any,
        channel: bytes,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
    ) -> None:
        super().__init__(channel, on_message, on_state)
        self._owned = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._source = client
        self._client: Any = None
        self._failures = 0
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._run())

    def alive(self) -> bool:
        """Whether the listening task still runs, on the event loop running now.

        A task of a loop that has been closed (``asyncio.run`` called again, a test's loop)
        can die without running its cleanup, so this is checked on every use.
        """
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return current is self._loop and not self._task.done() and not self._closed

    async def _run(self) -> None:
        backoff = 0.05
        try:
            while not self._closed:
                pubsub = None
                try:
                    if self._client is None:
                        self._client = await _node_client_async(self._source, self._failures)
                    pubsub = self._client.pubsub()
                    await pubsub.subscribe(self.channel)
                    while not self._closed:
                        message = await pubsub.get_message(timeout=0.2)
                        if message is not None:
                            self._handle(message)
                            backoff = 0.05
                except Exception as exc:  # whatever broke, resubscribe
                    if self._closed:
                        break
                    self._lost(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    self._failures += 1
                    if self._owned and self._client is not None:  # on a cluster: the next node
                        with contextlib.suppress(Exception):
                            await self._client.aclose()
                        self._client = None
                finally:
                    if pubsub is not None:
                        with contextlib.suppress(Exception):
                            await pubsub.aclose()
        finally:
            self._set_state(False)

    async def aclose(self) -> None:
        """Stop listening."""
        self._closed = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=1.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        if self._owned and self._client is not None:
            await self._client.aclose()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (its error belongs to nobody now)."""
    if not task.cancelled():
        task.exception()


def node_address(client: object) -> str:
    """``host:port`` (or the unix socket path) a standalone client connects to; no I/O.

    Raises:
        TypeError: ``client`` is a cluster client (it has no single address).
    """
    if isinstance(client, _CLUSTER_TYPES):
        raise TypeError("expected a standalone client, got a cluster client")
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _as_tuple(clients: Any, types: tuple[type, ...], kind: str) -> tuple[Any, ...]:
    items = tuple(clients) if isinstance(clients, list | tuple) else (clients,)
    if not items:
        raise ConfigurationError("at least one client is required")
    for client in items:
        if not isinstance(client, types):
            other = "asyncio" if kind == "a sync" else "sync"
            raise TypeError(
                f"expected {kind} redis-py client, got {_describe(client)}"
                + (f" (use the {other} variant of this class)" if _is_client(client) else "")
            )
    return items


def _is_client(obj: object) -> bool:
    return isinstance(obj, _SYNC_TYPES + _ASYNC_TYPES)


def runner_for(client: SyncClient | AsyncClient) -> SyncRunner | AsyncRunner:
    """The runner matching ``client``'s flavour (sync or asyncio)."""
    if isinstance(client, _ASYNC_TYPES):
        return AsyncRunner(client)
    return SyncRunner(client)
