"""async_transaction: optimistic WATCH / MULTI / EXEC with retries, jittered backoff, a budget."""

from __future__ import annotations

from typing import TypeVar

from .._core.transaction import DEFAULT_BACKOFF, Backoff, TransactionResult, transaction_plan
from .._runner import AsyncClient, AsyncRunner, AsyncTransactionFunction

__all__ = ["async_transaction"]

T = TypeVar("T")


async def async_transaction(
    client: AsyncClient,
    fn: AsyncTransactionFunction[T],
    *watch: str | bytes,
    retries: int = 10,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> TransactionResult[T]:
    """Run ``fn`` as an optimistic transaction over the keys in ``watch``, retrying conflicts.

    Each attempt pins one connection: ``WATCH *watch``, then ``fn(pipe)``. Inside ``fn``, reads
    (``await pipe.get(k)``) run immediately and return values; call ``pipe.multi()`` and then
    queue the writes (``pipe.set(k, v)``), which EXEC applies atomically, only if no watched key
    changed since WATCH. If ``fn`` returns without calling ``pipe.multi()``, nothing is
    executed (e.g. "insufficient balance"). Do not call ``pipe.execute()`` yourself.

    On a conflict the whole attempt is thrown away and ``fn`` runs again from WATCH, after a
    jittered backoff, so ``fn`` must have no side effects outside ``pipe``.

    Args:
        client: a redis-py client (standalone or cluster; on a cluster every watched and
            touched key must share a hash tag, e.g. ``{wallet}:alice``).
        fn: the transaction body; receives the pipeline, returns any value.
        *watch: the keys whose change aborts the attempt.
        retries: how many conflicts to retry before giving up (>= 0).
        backoff: seconds before the first retry, doubling with full jitter (capped at 64x),
            a ``timedelta``, or a callable ``retry_number -> seconds``; 0 retries at once.

    Returns:
        A `TransactionResult` with ``fn``'s value, EXEC's replies and the attempts it took.

    Raises:
        ConfigurationError: ``fn`` is not callable, ``retries`` < 0, a bad key or ``backoff``
            (before any I/O).
        CrossSlotError: watched keys in different cluster slots (before any I/O).
        TransactionConflictError: still conflicting after ``retries`` retries (``.attempts``).
        BackendUnavailableError: the connection failed before EXEC (nothing was applied).
        BackendTimeoutError: the connection failed during EXEC (outcome unknown).
    """
    runner = AsyncRunner(client)
    plan = transaction_plan(
        fn, watch, retries=retries, backoff=backoff, sync=not runner.asynchronous
    )
    return await runner.run(plan)
