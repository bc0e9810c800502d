"""AsyncBoundedCounter: a counter that never exceeds its limit, one round trip per increment."""

from __future__ import annotations

from .._core.bounded_counter import BoundedCounterCore
from .._runner import AsyncClient, AsyncRunner

__all__ = ["AsyncBoundedCounter"]


class AsyncBoundedCounter:
    """An integer counter at ``key`` that an increment may never push past ``limit``.

    Each `incr` is one script (``GET``, compare, ``INCRBY`` inside the server), so concurrent
    callers can never overshoot, unlike ``GET`` followed by ``INCR`` from the client.

    Args:
        client: a redis-py client (standalone or cluster).
        key: the counter's key, used as given (a string holding an integer).
        limit: the largest value the counter may reach (>= 0).

    Raises:
        ConfigurationError: ``key`` is empty or not str/bytes, or ``limit`` is not an int >= 0.
    """

    def __init__(self, client: AsyncClient, key: str | bytes, limit: int) -> None:
        self._core = BoundedCounterCore(key, limit)
        self._runner = AsyncRunner(client)

    @property
    def key(self) -> bytes:
        """The counter's key."""
        return self._core.key

    @property
    def limit(self) -> int:
        """The largest value the counter may reach."""
        return self._core.limit

    async def incr(self, amount: int = 1) -> int | None:
        """Add ``amount`` unless the result would exceed the limit.

        Returns:
            The new value, or ``None`` when the increment was refused (nothing changed).

        Raises:
            ConfigurationError: ``amount`` is not an int >= 1 (before any I/O).
            ScriptError: the key holds something other than an integer.
        """
        return await self._runner.run(self._core.incr(amount))

    async def value(self) -> int:
        """The current value (0 when the key does not exist)."""
        return await self._runner.run(self._core.value())

    async def reset(self) -> None:
        """Delete the counter, so it starts again from 0."""
        await self._runner.run(self._core.reset())
