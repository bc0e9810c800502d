"""AsyncRateLimiter and its algorithms: fixed/sliding window, sliding log, token bucket, GCRA."""

from __future__ import annotations

from collections.abc import Sequence

from .._core import ratelimit as core
from .._core.ratelimit import Decision, QuotaPolicy
from .._errors import ConfigurationError, ConfigurationTypeError
from .._keys import check_name
from .._runner import AsyncClient, AsyncRunner
from .._validate import Duration

__all__ = [
    "AsyncFixedWindow",
    "AsyncGCRA",
    "AsyncMultiLimit",
    "AsyncRateLimiter",
    "AsyncSlidingLog",
    "AsyncSlidingWindow",
    "AsyncTokenBucket",
    "Decision",
    "QuotaPolicy",
]


class AsyncRateLimiter:
    """What every limiter offers: `hit`, `peek`, `reset`, `enforce`; each one round trip.

    Decisions are taken inside the server by one script on the server's clock, so clients
    with skewed clocks agree, and concurrent hits can never overshoot. Every key the
    script writes carries a TTL: a client that goes idle leaves nothing behind.
    """

    def __init__(self, runner: AsyncRunner, cores: Sequence[core.LimiterCore]) -> None:
        self._runner = runner
        self._cores = core.check_cores(cores)
        # one limit: its algorithm's own lean script; several: the general one
        self._plans = core.plans_for(self._cores, packed=not runner.decodes_responses)

    @property
    def limit(self) -> int:
        """The most this limiter admits at once (for several limits, the smallest)."""
        return min(c.capacity for c in self._cores)

    @property
    def policies(self) -> tuple[QuotaPolicy, ...]:
        """Each limit's name, quota and window, in order (no I/O).

        The web integrations' IETF draft header style describes them in ``RateLimit-Policy``.
        """
        return tuple(c.policy for c in self._cores)

    def keys(self, key: str | bytes) -> tuple[bytes, ...]:
        """The Redis keys holding the state for the limited ``key`` (no I/O).

        Raises:
            ConfigurationError: ``key`` is empty, not str/bytes, too long, or holds ``{``/``}``.
        """
        raw = check_name(key, "key")
        return tuple(c.key(raw) for c in self._cores)

    async def hit(self, key: str | bytes, cost: int = 1) -> Decision:
        """Count a hit of ``cost`` units against ``key`` if the limit allows it.

        Never raises for "over the limit": a refusal is ``Decision(allowed=False, ...)`` and
        consumes nothing.

        Args:
            key: who is limited, e.g. a user id, an API key or an IP address.
            cost: units this hit consumes (an int from 1 to the limit).

        Returns:
            The decision, with what remains after this hit.

        Raises:
            ConfigurationError: bad ``key`` or ``cost`` (before any I/O); a cost above the
                limit is refused because it could never pass.
            BackendError: the server could not be reached or failed.
        """
        return await self._runner.run(self._plans.hit(key, cost))

    async def peek(self, key: str | bytes) -> Decision:
        """Whether a hit of cost 1 would pass now, and what remains, without consuming anything.

        Raises:
            ConfigurationError: bad ``key`` (before any I/O).
            BackendError: the server could not be reached or failed.
        """
        return await self._runner.run(self._plans.peek(key))

    async def enforce(self, key: str | bytes, cost: int = 1) -> Decision:
        """Like `hit`, but a refusal raises.

        Returns:
            The decision of the admitted hit.

        Raises:
            RateLimitedError: the hit was refused; ``retry_after`` says how long to wait.
            ConfigurationError: bad ``key`` or ``cost`` (before any I/O).
            BackendError: the server could not be reached or failed.
        """
        return await self._runner.run(self._plans.enforce(key, cost))

    async def reset(self, key: str | bytes) -> None:
        """Forget everything counted for ``key`` (one ``DEL``).

        Raises:
            ConfigurationError: bad ``key`` (before any I/O).
        """
        await self._runner.run(self._plans.reset(key))


class AsyncFixedWindow(AsyncRateLimiter):
    """At most ``limit`` units per ``window``, windows aligned to the epoch on server time.

    The cheapest limiter (one small hash per key), but a burst straddling a window edge can
    pass up to twice the limit within one window length.

    Args:
        client: a redis-py client (standalone or cluster).
        limit: units admitted per window (an int from 1 to 10**15).
        window: the window length in seconds (or a timedelta), from 1 ms to 10**9 s.
        name: the key suffix for this limit; by default derived from its parameters, so two
            different limits on the same key never share state.

    Raises:
        ConfigurationError: ``limit``, ``window`` or ``name`` is invalid.
    """

    def __init__(
        self, client: AsyncClient, limit: int, window: Duration, *, name: str | None = None
    ) -> None:
        super().__init__(AsyncRunner(client), [core.FixedWindowCore(limit, window, name)])


class AsyncSlidingLog(AsyncRateLimiter):
    """Exactly at most ``limit`` units in any interval of length ``window`` (a sorted set).

    Memory grows with the hits: one sorted-set entry per admitted hit in the window, whatever
    its cost, so at most ``limit`` entries; the limit is capped at 5,000 so that no call, trim
    or expiry of the set is ever slow for the server.

    Args:
        client: a redis-py client (standalone or cluster).
        limit: units admitted per sliding window (an int from 1 to 5,000).
        window: the window length in seconds (or a timedelta), from 1 ms to 10**9 s.
        name: the key suffix for this limit (default: derived from its parameters).

    Raises:
        ConfigurationError: ``limit``, ``window`` or ``name`` is invalid.
    """

    def __init__(
        self, client: AsyncClient, limit: int, window: Duration, *, name: str | None = None
    ) -> None:
        super().__init__(AsyncRunner(client), [core.SlidingLogCore(limit, window, name)])


class AsyncSlidingWindow(AsyncRateLimiter):
    """About ``limit`` units per sliding ``window``, in O(1) memory (two counters).

    The previous window's count is weighted by how much of it the sliding window still
    covers, which assumes its hits were spread evenly: a burst at its very end can let through
    up to ``limit * (1 + elapsed / window)`` (< 2x) in one window length. Within one window it
    never admits more than ``limit``.

    Args:
        client: a redis-py client (standalone or cluster).
        limit: units admitted per sliding window (an int from 1 to 10**15).
        window: the window length in seconds (or a timedelta), from 1 ms to 10**9 s.
        name: the key suffix for this limit (default: derived from its parameters).

    Raises:
        ConfigurationError: ``limit``, ``window`` or ``name`` is invalid.
    """

    def __init__(
        self, client: AsyncClient, limit: int, window: Duration, *, name: str | None = None
    ) -> None:
        super().__init__(AsyncRunner(client), [core.SlidingWindowCore(limit, window, name)])


class AsyncTokenBucket(AsyncRateLimiter):
    """A bucket of ``capacity`` tokens refilled at ``refill_rate`` tokens per second.

    Allows bursts of up to ``capacity``, then an average of ``refill_rate`` per second.

    Args:
        client: a redis-py client (standalone or cluster).
        capacity: the bucket size, the largest burst (an int from 1 to 10**15).
        refill_rate: tokens added per second (a finite number > 0); an empty bucket must
            refill within 10**9 s (``capacity / refill_rate <= 10**9``).
        name: the key suffix for this limit (default: derived from its parameters).

    Raises:
        ConfigurationError: ``capacity``, ``refill_rate`` or ``name`` is invalid.
    """

    def __init__(
        self,
        client: AsyncClient,
        capacity: int,
        refill_rate: float,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(AsyncRunner(client), [core.TokenBucketCore(capacity, refill_rate, name)])


class AsyncGCRA(AsyncRateLimiter):
    """GCRA: ``limit`` units per ``period``, evenly spaced; bursts of ``burst``.

    Equivalent to a token bucket but stores one number per key (the theoretical arrival time).

    Args:
        client: a redis-py client (standalone or cluster).
        limit: units per period (an int from 1 to 10**15); one unit is freed every
            ``period / limit``.
        period: the period in seconds (or a timedelta), from 1 ms to 10**9 s.
        burst: the most admitted at once (an int from 1 to 10**15; default ``limit``); a
            full burst must drain within 10**9 s (``burst * period / limit <= 10**9``).
        name: the key suffix for this limit (default: derived from its parameters).

    Raises:
        ConfigurationError: ``limit``, ``period``, ``burst`` or ``name`` is invalid.
    """

    def __init__(
        self,
        client: AsyncClient,
        limit: int,
        period: Duration,
        burst: int | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(AsyncRunner(client), [core.GCRACore(limit, period, burst, name)])


class AsyncMultiLimit(AsyncRateLimiter):
    """Several limits applied together, e.g. 10 per second and 1,000 per hour.

    A hit is one script over all the limits' keys (they share the limited key's hash tag, so
    this works on a cluster): it is admitted only if every limit allows it, and a refused hit
    consumes from none of them. The returned `Decision` is the binding one: the refusal with
    the longest ``retry_after``, or, when admitted, the limit with the fewest ``remaining``.
    `hit_all` gives every limit's decision.

    Args:
        limiters: the limits (1 to 16; the first one's client is used). Two limits of the
            same kind and parameters would share a key: give one a ``name``. The limits of
            its sliding logs may add up to at most 5,000 (their entries, together).

    Raises:
        ConfigurationError: no limiter or more than 16, sliding logs over 5,000 entries
            together, or two limiters sharing a key suffix.
        TypeError: a limiter of the other flavour (sync vs asyncio).
    """

    def __init__(self, limiters: Sequence[AsyncRateLimiter]) -> None:
        items = list(limiters)
        for item in items:
            if not isinstance(item, AsyncRateLimiter):
                raise ConfigurationTypeError(
                    f"expected AsyncRateLimiter instances, got {type(item).__name__}"
                )
        if not items:
            raise ConfigurationError("at least one limiter is required")
        super().__init__(items[0]._runner, [c for item in items for c in item._cores])

    async def hit_all(self, key: str | bytes, cost: int = 1) -> list[Decision]:
        """Like `hit`, but returns each limit's decision, in the order given.

        Raises:
            ConfigurationError: bad ``key`` or ``cost`` (before any I/O).
            BackendError: the server could not be reached or failed.
        """
        plans = self._plans
        if isinstance(plans, core.MultiCore):
            decisions, _ = await self._runner.run(plans.decide(key, cost))
            return decisions
        return [await self._runner.run(plans.hit(key, cost))]
