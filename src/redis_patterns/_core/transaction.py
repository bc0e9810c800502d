"""Optimistic transactions (WATCH / MULTI / EXEC) as a plan: validation, retries and backoff."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from .._errors import ConfigurationTypeError, TransactionConflictError
from .._keys import check_name
from .._plan import KeyT, Plan, Sleep, Transaction, TransactionAttempt
from .._validate import check_callable, check_int, check_number
from .backoff import backoff_delay

__all__ = [
    "Backoff",
    "TransactionResult",
    "transaction_plan",
]

T = TypeVar("T")


Backoff = float | int | timedelta | Callable[[int], float]
"""A base delay in seconds (exponential, full jitter), or ``retry_number -> seconds``."""

DEFAULT_BACKOFF = 0.002
# A numeric backoff doubles per retry up to this many doublings (base * 64), then stays flat.
_MAX_DOUBLINGS = 6


@dataclass(frozen=True, slots=True)
class TransactionResult(Generic[T]):
    """The outcome of a committed `transaction`.

    Attributes:
        value: what ``fn`` returned on the attempt that committed.
        results: EXEC's replies, one per queued command; ``None`` when ``fn`` never called
            ``pipe.multi()`` (it decided to write nothing, so nothing was executed).
        attempts: how many times ``fn`` ran (1 when there was no conflict).
    """

    value: T
    results: list[Any] | None
    attempts: int

    @property
    def conflicts(self) -> int:
        """How many attempts were aborted by a WATCH conflict and retried."""
        return self.attempts - 1

    @property
    def executed(self) -> bool:
        """Whether a MULTI/EXEC block ran (``fn`` called ``pipe.multi()``)."""
        return self.results is not None


def _backoff_delays(backoff: object) -> Callable[[int, random.Random], float]:
    if callable(backoff):
        user: Callable[[int], float] = backoff

        def call(retry: int, _rng: random.Random) -> float:
            return float(check_number(user(retry), f"backoff({retry})", minimum=0))

        return call
    seconds: object = backoff
    if isinstance(backoff, timedelta):
        seconds = backoff.total_seconds()
    elif isinstance(backoff, bool) or not isinstance(backoff, int | float):
        raise ConfigurationTypeError(
            f"backoff must be seconds, a timedelta or a callable, not {type(backoff).__name__}"
        )
    base = float(check_number(seconds, "backoff", minimum=0))

    def jittered(retry: int, rng: random.Random) -> float:
        # Full jitter: retrying clients spread apart and stop colliding on the same key.
        return backoff_delay(retry - 1, base, base * 2**_MAX_DOUBLINGS, rng=rng)

    return jittered


def transaction_plan(
    fn: Callable[[Any], Any],
    watch: Sequence[KeyT],
    *,
    retries: int,
    backoff: object,
    sync: bool,
    rng: random.Random | None = None,
) -> Plan[TransactionResult[Any]]:
    """WATCH ``watch``, run ``fn(pipe)``, EXEC; retry conflicts up to ``retries`` times."""
    check_callable(fn, "fn", async_twin="async_transaction" if sync else None)
    check_int(retries, "retries", minimum=0)
    keys = tuple(check_name(k, "watched key", raw_key=True) for k in watch)
    delay = _backoff_delays(backoff)
    rng = rng or random.Random()
    for attempt in range(1, retries + 2):
        outcome: TransactionAttempt = yield Transaction(fn, keys)
        if outcome.committed:
            return TransactionResult(outcome.value, outcome.results, attempt)
        if attempt <= retries:
            seconds = delay(attempt, rng)
            if seconds > 0:
                yield Sleep(seconds)
    raise TransactionConflictError(
        f"watched keys {[k.decode(errors='replace') for k in keys]!r} kept changing: "
        f"gave up after {retries + 1} attempts",
        attempts=retries + 1,
    )
