"""The redis-py boundary for transactions: one WATCH attempt (WATCH, ``fn(pipe)``, EXEC) on a
pinned connection, and a `Multi` block (MULTI, its items, EXEC in one write), as `Invoke`
steps, and what each redis-py error of them means."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions as rex

from ._errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    PermissionDeniedError,
    RedisPatternsError,
)
from ._plan import Command, Eval, KeyT, Multi, Transaction, TransactionAttempt
from ._redis import (
    _COMMAND_ERRORS,
    REDIS_ERRORS,
    Context,
    Invoke,
    Steps,
    _initialize,
    _map_item,
    backend_errors,
    check_slots,
    client_features,
    is_cluster,
    map_backend_error,
)
from ._redis_steps import _pipeline_args, exchange_steps

__all__ = ["multi_steps", "transaction_steps"]

# redis-py raises WatchError for three different things; only the first two are conflicts.
_CONFLICTS = ("Watched variable changed", "Slot rebalancing")
# A slot that moved while we were reading (resharding): the client has learnt the new owner,
# so the attempt is retried from WATCH like a conflict.
_MOVED = (rex.MovedError, rex.AskError, rex.TryAgainError)
# After these a cluster client's map may name a node that is gone or no longer owns the slot.
_STALE_MAP = (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.SlotNotCoveredError)


class _Failed(Exception):
    """A transaction attempt's redis-py error and what it means (``None``: a WATCH conflict)."""

    def __init__(self, raw: BaseException, error: BaseException | None) -> None:
        super().__init__(raw)
        self.raw = raw
        self.error = error


def _transaction_error(exc: BaseException, phase: str) -> BaseException | None:
    """``None`` for a WATCH conflict (retry from WATCH); otherwise the error to raise.

    redis-py also raises WatchError when the connection dies while keys are watched. Before
    EXEC nothing was applied; during EXEC the server may have committed, so that is an
    outcome-unknown error, never a conflict to replay.
    """
    if isinstance(exc, rex.WatchError) and str(exc).startswith(_CONFLICTS):
        return None
    if isinstance(exc, _MOVED) and phase != "exec":
        return None
    lost = isinstance(exc, rex.WatchError | rex.ConnectionError | rex.TimeoutError)
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


def _in_multi(pipe: Any) -> bool:
    """Whether ``fn`` called ``pipe.multi()`` (redis-py keeps the flag per pipeline kind)."""
    strategy = getattr(pipe, "_execution_strategy", None)  # cluster pipelines
    if strategy is not None:
        return bool(getattr(strategy, "_explicit_transaction", False))
    return bool(getattr(pipe, "explicit_transaction", False))


def _connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, rex.WatchError):
        return not str(exc).startswith(_CONFLICTS)  # "A ConnectionError occurred while watching"
    return isinstance(exc, rex.ConnectionError | rex.TimeoutError)


def _forget_watch(pipe: Any) -> Steps[None]:
    """After its connection failed, let a pipeline go without UNWATCH.

    redis-py's reset sends UNWATCH when it thinks it is still watching, on the same connection
    object, which reconnects to its old address: a Sentinel-managed connection then bypasses
    the Sentinels and, after a failover, settles on the demoted primary for good (every later
    transaction failed at EXEC with READONLY). A closed connection watches nothing anyway.
    """
    connection = getattr(pipe, "connection", None)  # standalone pipelines only
    if connection is not None:
        pipe.watching = False
        yield Invoke(connection.disconnect)


def _unwatch_with_exec(pipe: Any) -> None:
    """EXEC ends the WATCH on the server, and a failed connection watches nothing: tell the
    pipeline so, or its reset after a failed EXEC sends UNWATCH (see `_forget_watch`). A
    conflict is still reported (EXEC's nil reply), and so is a lost connection."""
    if getattr(pipe, "connection", None) is not None:
        pipe.watching = False


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


def _cluster_refresh(
    client: object, exc: BaseException | None, keys: Sequence[KeyT]
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
    if not is_cluster(client) or not isinstance(exc, _STALE_MAP):
        return None
    cluster: Any = client
    failed = None
    with contextlib.suppress(*REDIS_ERRORS):
        failed = cluster.get_node_from_key(keys[0]).name if keys else None
    return {"last_failed_node_name": failed}


def _transactional(client: Any, runner: Context) -> tuple[Callable[[], Any], Callable[..., Any]]:
    """How to enter and leave ``with client.pipeline(transaction=True) as pipe`` (``async
    with``: an asyncio cluster pipeline initializes its client on entering), as steps."""
    made = client.pipeline(transaction=True)
    if runner.asynchronous:
        return made.__aenter__, made.__aexit__
    return made.__enter__, made.__exit__


def transaction_steps(effect: Transaction, runner: Context) -> Steps[TransactionAttempt]:
    """One WATCH / ``fn(pipe)`` / EXEC attempt on a pinned connection (see `Transaction`)."""
    client = runner.clients[effect.node or 0]
    check_slots(client, effect.watch)
    phase = "watch"
    try:
        with backend_errors(mapper=lambda exc: _Failed(exc, _transaction_error(exc, phase))):
            enter, leave = _transactional(client, runner)
            pipe = yield Invoke(enter)
            abandoned = False
            try:
                _no_silent_reconnect(pipe)
                if effect.watch:
                    yield Invoke(pipe.watch, effect.watch)
                phase = "fn"
                value = yield Invoke(effect.fn, (pipe,))
                if inspect.isawaitable(value) and not runner.asynchronous:
                    close = getattr(value, "close", None)
                    if close is not None:
                        close()  # don't leave a never-awaited coroutine behind
                    raise TypeError("fn returned an awaitable: use async_transaction for async fn")
                if not _in_multi(pipe):
                    return TransactionAttempt(True, value, None)
                phase = "exec"
                _unwatch_with_exec(pipe)
                return TransactionAttempt(True, value, list((yield Invoke(pipe.execute))))
            except GeneratorExit:  # closed mid-attempt (its runner is gone): nothing can be sent
                abandoned = True
                raise
            except REDIS_ERRORS as exc:
                if _connection_lost(exc):
                    with contextlib.suppress(*REDIS_ERRORS, OSError):
                        yield from _forget_watch(pipe)
                raise
            finally:
                if not abandoned:
                    yield Invoke(leave, (None, None, None))
    except _Failed as failed:
        refresh = _cluster_refresh(client, failed.raw, effect.watch)
        if refresh is not None:
            with contextlib.suppress(RedisPatternsError, OSError), _COMMAND_ERRORS:
                yield Invoke(client.nodes_manager.initialize, (), refresh)
        if failed.error is None:
            return TransactionAttempt(False)
        raise failed.error from failed.raw


# --- Multi: a block without WATCH -----------------------------------------------------------

# A cluster refuses a block queued on a node that no longer owns its slot (MOVED or ASK while
# queueing, then EXECABORT): nothing ran, and redis-py has learnt the new owner, so the block
# is sent again, as often as redis-py follows a plain command's redirections.
_REDIRECTS = 3


def multi_steps(effect: Multi, runner: Context) -> Steps[list[Any]]:
    """The block in one round trip; after ``NOSCRIPT`` the whole block once more, the items
    that met it as ``EVAL`` (see `Multi`). A failed item's library error takes its place."""
    if not runner.ready:
        yield from _initialize(runner)
    client = runner.clients[effect.node or 0]
    check_slots(client, [k for item in effect.effects if isinstance(item, Eval) for k in item.keys])
    features = client_features(client)
    if features.transactions is False:
        raise _refused("nothing was sent")
    outcome, results = yield from _multi(client, runner, effect.effects, frozenset())
    if outcome == "bare":
        # MULTI itself was refused (NOPERM), so each item ran on its own, in order, and EXEC
        # was refused too: what they did stands and is answered (no NOSCRIPT re-send: they
        # ran), and no later block is sent (``features.transactions``).
        features.transactions = False
    elif outcome == "refused":
        features.transactions = False  # EXEC refused the queued block: nothing ran
        raise _refused("nothing ran")
    else:
        features.transactions = True
    missing = frozenset(i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError))
    if missing and outcome == "bare":
        raise _refused("the items ran one by one, a script of them did not (NOSCRIPT)")
    if missing:
        outcome, results = yield from _multi(client, runner, effect.effects, missing)
        if outcome != "exec":  # the rights changed in between
            features.transactions = False
            raise _refused("on the block's second send, after NOSCRIPT")
    return [_map_item(e, r) for e, r in zip(effect.effects, results, strict=True)]


def _multi(
    client: Any, runner: Context, effects: Sequence[Eval | Command], as_eval: frozenset[int]
) -> Steps[tuple[str, list[Any]]]:
    """One block's outcome and replies (redis-py's, errors in place): the ``EVAL`` of the
    items in ``as_eval``, the ``EVALSHA`` of the other scripts. The outcome is ``"exec"``
    (EXEC's replies), ``"bare"`` (MULTI was refused: the items ran one by one; their own
    replies) or ``"refused"`` (EXEC was refused: nothing ran; no replies)."""
    commands = [_pipeline_args(e, sha=i not in as_eval) for i, e in enumerate(effects)]
    sent = False

    def began() -> None:
        nonlocal sent
        sent = True

    def mapped(exc: BaseException) -> BaseException:
        if sent and isinstance(exc, rex.ConnectionError | rex.TimeoutError):
            return BackendTimeoutError(
                f"the connection failed while a MULTI/EXEC block was sent or answered; it may "
                f"or may not have been applied (outcome unknown): {exc}"
            )
        return map_backend_error(exc)

    with backend_errors(mapper=mapped):
        if not is_cluster(client):
            block = [("MULTI",), *commands, ("EXEC",)]
            replies = yield from exchange_steps(client, block, sending=began)
            if _no_permission(replies[0]):
                return "bare", replies[1:-1]
            if _no_permission(replies[-1]):
                return "refused", []
            return "exec", _exec_replies(replies[1:-1], replies[-1])
        for attempt in range(_REDIRECTS + 1):
            try:
                return "exec", (yield from _cluster_multi(client, runner, commands, began))
            except (rex.MovedError, rex.AskError):
                if attempt == _REDIRECTS:
                    raise
        raise AssertionError("unreachable")


def _no_permission(reply: Any) -> bool:
    """Whether ``reply`` is the refusal of MULTI or EXEC to an ACL user without them."""
    return isinstance(reply, rex.ResponseError) and bool(
        re.search(r"no permissions to run the '(multi|exec)' command", str(reply), re.I)
    )


def _refused(what: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        "this user may not run MULTI/EXEC (ACL @transaction): a MULTI/EXEC block was refused "
        f"({what}); grant +@transaction, or the pattern keeps to its script"
    )


def _exec_replies(queued: list[Any], executed: Any) -> list[Any]:
    """EXEC's replies; when EXEC refused the block (EXECABORT), each item's refusal or that."""
    if isinstance(executed, list):
        return executed
    return [q if isinstance(q, rex.ResponseError) else executed for q in queued]


def _queue(pipe: Any, commands: list[tuple[Any, ...]]) -> None:
    """Queue ``commands`` on ``pipe``. One step that returns nothing: an asyncio cluster
    pipeline's ``execute_command`` returns the pipeline, which is awaitable, and awaiting it
    (re-initializing it) empties its queue."""
    for args in commands:
        pipe.execute_command(*args)


def _cluster_multi(
    client: Any, runner: Context, commands: list[tuple[Any, ...]], began: Callable[[], None]
) -> Steps[list[Any]]:
    """The block through redis-py's cluster transaction pipeline (it routes it by its slot),
    with its re-sending off: a block lost on its way must not be run twice. redis-py connects
    and writes in one call here, so any lost connection counts as outcome unknown."""
    enter, leave = _transactional(client, runner)
    pipe = yield Invoke(enter)
    abandoned = False
    try:
        _no_silent_reconnect(pipe)
        yield Invoke(_queue, (pipe, commands))
        began()
        return list((yield Invoke(pipe.execute, (), {"raise_on_error": False})))
    except GeneratorExit:  # closed mid-flight (its runner is gone): nothing can be sent
        abandoned = True
        raise
    finally:
        if not abandoned:
            yield Invoke(leave, (None, None, None))
