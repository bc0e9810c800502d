"""Rate limiters' logic: one core class per algorithm; one script decides each hit.

A single limit runs its algorithm's lean script; several limits (`MultiCore`) one general
script over all their keys. Both share the state layout of docs/ratelimit.md, "Key layout".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .. import _metrics
from .._errors import ConfigurationError, ConfigurationTypeError, RateLimitedError
from .._keys import check_name, key_parts
from .._plan import ArgT, Command, Eval, Plan
from .._script import LuaScript, package_script
from .._validate import MAX_DURATION_MS, check_int, check_number, duration_ms

__all__ = [
    "MAX_LIMITS",
    "MAX_LOG_ENTRIES",
    "MAX_UNITS",
    "Decision",
    "FixedWindowCore",
    "GCRACore",
    "LimiterCore",
    "MultiCore",
    "QuotaPolicy",
    "SingleCore",
    "SlidingLogCore",
    "SlidingWindowCore",
    "TokenBucketCore",
    "check_cores",
    "combine",
    "plans_for",
]

PATTERN = "ratelimit"

# Bounds that keep every hit exact in the script's doubles, and its server time small and
# independent of the cost (see the script's header).
# limit, capacity, burst (and so cost): a sum of two stays below 2^53
MAX_UNITS = 10**15
# Sorted-set members one hit may meet over all its sliding logs (one per hit in the window):
# trimming, expiring or deleting 5,000 took 0.5-2 ms of server time on Redis 7 (10,000 took up
# to 7.6 ms on a loaded machine: too close to a 10 ms budget).
MAX_LOG_ENTRIES = 5_000
MAX_LIMITS = 16  # limits in one MultiLimit
_MAX_US = MAX_DURATION_MS * 1000  # windows, periods, GCRA drain times, bucket refill times


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one hit (or peek): whether it passes, and what is left.

    Attributes:
        allowed: the hit was admitted (for `peek`: a hit of cost 1 would be admitted now).
        limit: the most the limiter admits at once (limit, capacity or burst).
        remaining: how many more units would be admitted right now.
        retry_after: seconds to wait before this hit would be admitted (0.0 when allowed);
            rounded up, so waiting exactly this long is enough if nothing else consumes.
        reset_after: seconds until the limiter is back to its full allowance if no more hits
            come (0.0 when it already is).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """One limit described as the IETF draft's ``RateLimit-Policy`` header describes a quota.

    Attributes:
        name: the limit's ``name`` when one was given, else ``None``.
        limit: the quota: the most admitted at once (``Decision.limit``).
        window: seconds in which an exhausted limit is back to ``limit``: the window (fixed
            window, sliding log and sliding window), ``capacity / refill_rate`` (token bucket),
            ``burst * period / limit`` (GCRA).
    """

    name: str | None
    limit: int
    window: float


class LimiterCore:
    """Validated configuration of one limit: its algorithm, parameters, key and scripts.

    A limiter with this one limit runs the algorithm's own lean script
    (``ratelimit_<algorithm>.lua``, through `SingleCore`); several limits together
    (`MultiCore`) run the general ``ratelimit_hit.lua``. Both read and write the same state,
    so a limit may be hit alone and inside a `MultiLimit` on the same keys.
    """

    __slots__ = (
        "_head",
        "_tail",
        "algorithm",
        "capacity",
        "lean_args",
        "name",
        "params",
        "script",
        "suffix",
        "window",
    )

    algorithm: str
    capacity: int
    name: str | None
    params: tuple[str, str]  # the general script's two parameters of this limit
    lean_args: tuple[bytes, ...]  # the lean script's parameters (after the cost)
    script: LuaScript  # the lean script
    suffix: str
    window: float  # seconds in which an exhausted limit is whole again

    def _set(
        self,
        algorithm: str,
        capacity: int,
        params: tuple[str, str],
        name: object,
        window: float,
        *,
        script: str,
        args: tuple[str, str],
        label: str,
    ) -> None:
        self.algorithm = algorithm
        self.capacity = capacity
        self.params = params
        self.window = window
        if name is not None and not isinstance(name, str):
            raise ConfigurationTypeError(f"name must be a str, not {type(name).__name__}")
        self.name = None if name is None else check_name(name, "name").decode()
        self.suffix = f"{algorithm}:{capacity}:{label}" if self.name is None else self.name
        self._head, self._tail = key_parts(PATTERN, self.suffix)
        self.script = package_script(script)
        # bytes go to the socket as they are: nothing is encoded per call
        self.lean_args = tuple(a.encode() for a in args)

    @property
    def policy(self) -> QuotaPolicy:
        return QuotaPolicy(self.name, self.capacity, self.window)

    def key(self, key: bytes) -> bytes:
        """The Redis key holding this limit's state for the limited ``key`` (already checked)."""
        return self._head + key + self._tail


def _decision_labels(suffixes: tuple[str, ...]) -> tuple[tuple[str, str], tuple[str, str]]:
    """The metric labels of an admitted and a refused hit: the limits' names (or, unnamed,
    their ``algorithm:limit:window`` suffixes), never the limited key."""
    name = "+".join(suffixes)
    return (name, "allowed"), (name, "refused")


# A lean script's packed reply: allowed, remaining, retry_after_us, reset_after_us (then, from
# the scripts that read the clock on every call, the server time in µs), as big-endian doubles
# (exact: every one is a whole number below 2^53).
_UNPACK = struct.Struct(">4d").unpack_from
_UNPACK_TIMED = struct.Struct(">5d").unpack


class SingleCore:
    """The plans of a limiter with one limit: one call of the limit's own lean script.

    Everything but the limited key and the cost is computed once here. ``packed`` asks the
    script for its reply as one string of packed numbers, which costs the server less than an
    array; a client that decodes replies (``decode_responses=True``) gets the array.
    """

    __slots__ = (
        "_allowed",
        "_args",
        "_args_one",
        "_head",
        "_peek_args",
        "_refused",
        "_script",
        "_tail",
        "capacity",
    )

    def __init__(self, limit: LimiterCore, *, packed: bool) -> None:
        self.capacity = limit.capacity
        self._allowed, self._refused = _decision_labels((limit.suffix,))
        self._head, self._tail = limit._head, limit._tail
        self._script = limit.script
        self._args: tuple[bytes, ...] = (*limit.lean_args, b"1" if packed else b"0")
        # the usual hit, cost 1, and a peek (cost 0): no tuple built per call
        self._args_one: tuple[ArgT, ...] = (b"1", *self._args)
        self._peek_args: tuple[ArgT, ...] = (b"0", *self._args)

    def _decision(self, reply: bytes | list[int]) -> Decision:
        if reply.__class__ is bytes:
            allowed, remaining, retry, reset = _UNPACK(reply)
            return Decision(allowed == 1, self.capacity, int(remaining), retry / 1e6, reset / 1e6)
        return Decision(reply[0] == 1, self.capacity, reply[1], reply[2] / 1e6, reply[3] / 1e6)

    def hit(self, key: object, cost: object) -> Plan[Decision]:
        raw = check_name(key, "key")
        args = self._args_one
        if cost != 1 or cost.__class__ is not int:
            args = (_check_cost(self.capacity, cost), *self._args)
        reply = yield Eval(self._script, (self._head + raw + self._tail,), args)
        decision = self._decision(reply)
        if _metrics.on:
            _metrics.LIMITER_DECISIONS.record(self._allowed if decision.allowed else self._refused)
        return decision

    def peek(self, key: object) -> Plan[Decision]:
        raw = check_name(key, "key")
        reply = yield Eval(self._script, (self._head + raw + self._tail,), self._peek_args)
        return self._decision(reply)

    def enforce(self, key: object, cost: object) -> Plan[Decision]:
        return _enforced((yield from self.hit(key, cost)))

    def timed_hit(self, key: object, cost: object) -> Plan[tuple[Decision, int]]:
        """`hit`, with the server time (µs) the script decided on: for the scripts that read
        the clock on every call (sliding log, sliding window, GCRA and token bucket)."""
        raw = check_name(key, "key")
        args: tuple[ArgT, ...] = (_check_cost(self.capacity, cost), *self._args)
        reply = yield Eval(self._script, (self._head + raw + self._tail,), args)
        now = _UNPACK_TIMED(reply)[4] if isinstance(reply, bytes) else reply[4]
        decision = self._decision(reply)
        if _metrics.on:
            _metrics.LIMITER_DECISIONS.record(self._allowed if decision.allowed else self._refused)
        return decision, int(now)

    def reset(self, key: object) -> Plan[None]:
        raw = check_name(key, "key")
        yield Command(("DEL", self._head + raw + self._tail))


def _window_us(window: object) -> int:
    return duration_ms(window, "window") * 1000


def _units(value: object, what: str, maximum: int = MAX_UNITS) -> int:
    units = check_int(value, what, minimum=1)
    if units > maximum:
        raise ConfigurationError(f"{what} must be at most {maximum:,}, got {units:,}")
    return units


class FixedWindowCore(LimiterCore):
    """At most ``limit`` units per window; windows are aligned to the epoch on server time."""

    __slots__ = ()

    def __init__(self, limit: int, window: object, name: object = None) -> None:
        limit = _units(limit, "limit")
        window_us = _window_us(window)
        self._set(
            "fw",
            limit,
            (str(limit), str(window_us)),
            name,
            window_us / 1e6,
            script="ratelimit_fixed_window",
            args=(str(limit), str(window_us // 1000)),
            label=str(window_us),
        )


class SlidingLogCore(LimiterCore):
    """At most ``limit`` units in any interval of ``window``: one sorted-set entry per hit."""

    __slots__ = ()

    def __init__(self, limit: int, window: object, name: object = None) -> None:
        limit = check_int(limit, "limit", minimum=1)
        if limit > MAX_LOG_ENTRIES:
            raise ConfigurationError(
                f"a SlidingLog limit must be at most {MAX_LOG_ENTRIES:,}, got {limit:,}: it "
                "keeps one entry per hit in the window, and more would make one call slow "
                "for the server; use SlidingWindow, TokenBucket or GCRA for larger limits"
            )
        window_us = _window_us(window)
        params = (str(limit), str(window_us))
        self._set(
            "sl",
            limit,
            params,
            name,
            window_us / 1e6,
            script="ratelimit_sliding_log",
            args=params,
            label=str(window_us),
        )


class SlidingWindowCore(LimiterCore):
    """Two fixed-window counters, the previous one weighted by its overlap with the window."""

    __slots__ = ()

    def __init__(self, limit: int, window: object, name: object = None) -> None:
        limit = _units(limit, "limit")
        window_us = _window_us(window)
        params = (str(limit), str(window_us))
        self._set(
            "sw",
            limit,
            params,
            name,
            window_us / 1e6,
            script="ratelimit_sliding_window",
            args=params,
            label=str(window_us),
        )


def _positive_float(value: object, what: str) -> float:
    return float(check_number(value, what, positive=True))


class TokenBucketCore(LimiterCore):
    """``capacity`` tokens, refilled continuously at ``refill_rate`` tokens per second.

    The same algorithm as GCRA (burst ``capacity``, one unit every ``1 / refill_rate`` s), so
    the same script and the same state: the time at which the bucket is full again.
    """

    __slots__ = ()

    def __init__(self, capacity: int, refill_rate: float, name: object = None) -> None:
        capacity = _units(capacity, "capacity")
        rate = _positive_float(refill_rate, "refill_rate")
        per_us = rate / 1_000_000
        if per_us * _MAX_US < capacity:
            raise ConfigurationError(
                f"refill_rate {refill_rate!r} is too small: refilling {capacity:,} tokens would "
                f"take more than {MAX_DURATION_MS // 1000} s (about 31 years)"
            )
        params = (str(capacity), repr(1_000_000 / rate))  # burst, µs per token
        self._set(
            "tb",
            capacity,
            params,
            name,
            capacity / rate,
            script="ratelimit_gcra",
            args=params,
            label=repr(per_us),
        )


class GCRACore(LimiterCore):
    """Generic cell rate algorithm: ``limit`` per ``period`` evenly, bursts of up to ``burst``."""

    __slots__ = ()

    def __init__(
        self, limit: int, period: object, burst: int | None = None, name: object = None
    ) -> None:
        limit = _units(limit, "limit")
        period_us = duration_ms(period, "period") * 1000
        burst = limit if burst is None else _units(burst, "burst")
        interval = period_us / limit
        if burst * interval > _MAX_US:
            raise ConfigurationError(
                f"burst {burst:,} at {limit:,} per {period_us / 1e6!r} s takes more than "
                f"{MAX_DURATION_MS // 1000} s (about 31 years) to drain"
            )
        params = (str(burst), repr(interval))
        self._set(
            "gcra",
            burst,
            params,
            name,
            burst * period_us / limit / 1e6,
            script="ratelimit_gcra",
            args=params,
            label=repr(interval),
        )


def check_cores(cores: Sequence[LimiterCore]) -> tuple[LimiterCore, ...]:
    """Refuse an empty or too large set of limits, or two limits that would share one key."""
    if not cores:
        raise ConfigurationError("at least one limit is required")
    if len(cores) > MAX_LIMITS:
        raise ConfigurationError(
            f"at most {MAX_LIMITS} limits may apply together, got {len(cores)}"
        )
    entries = sum(c.capacity for c in cores if c.algorithm == "sl")
    if entries > MAX_LOG_ENTRIES:
        raise ConfigurationError(
            f"the sliding logs of one MultiLimit may hold at most {MAX_LOG_ENTRIES:,} entries "
            f"together (the sum of their limits), got {entries:,}"
        )
    suffixes = [c.suffix for c in cores]
    if len(set(suffixes)) != len(suffixes):
        raise ConfigurationError(
            f"two limits share a key suffix ({suffixes}); give them distinct names"
        )
    return tuple(cores)


def _check_cost(capacity: int, cost: object) -> int:
    cost = check_int(cost, "cost", minimum=1)
    if cost > capacity:
        raise ConfigurationError(
            f"cost {cost} exceeds the limit's capacity {capacity}: such a hit could never be "
            "admitted"
        )
    return cost


def _enforced(decision: Decision) -> Decision:
    if not decision.allowed:
        raise RateLimitedError(
            f"rate limit exceeded ({decision.limit} allowed); retry after "
            f"{decision.retry_after:.3f} s",
            retry_after=decision.retry_after,
        )
    return decision


def _us(value: int | bytes | str) -> float:
    return int(value) / 1_000_000


def combine(decisions: Sequence[Decision]) -> Decision:
    """The one decision that binds: the refusal with the longest wait, else the tightest limit."""
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: (d.retry_after, -d.remaining))
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after))


class MultiCore:
    """The plans of a limiter over several limits: one general script evaluates them all."""

    __slots__ = ("_allowed", "_refused", "capacity", "cores")

    def __init__(self, cores: Sequence[LimiterCore]) -> None:
        self.cores = check_cores(cores)
        self.capacity = min(c.capacity for c in self.cores)
        self._allowed, self._refused = _decision_labels(tuple(c.suffix for c in self.cores))

    def decide(
        self, key: object, cost: object, *, consume: bool = True
    ) -> Plan[tuple[list[Decision], int]]:
        """One script evaluating every limit for ``key``; returns the decisions and the server
        time (µs) it decided on."""
        raw = check_name(key, "key")
        amount = _check_cost(self.capacity, cost) if consume else 1
        args: list[str | int] = ["hit" if consume else "peek", amount]
        for core in self.cores:
            args += [core.algorithm, *core.params]
        keys = tuple(c.key(raw) for c in self.cores)
        reply = yield package_script("ratelimit_hit").eval(keys, args)
        decisions = [
            Decision(
                allowed=bool(int(reply[2 + 4 * i])),
                limit=core.capacity,
                remaining=int(reply[3 + 4 * i]),
                retry_after=_us(reply[4 + 4 * i]),
                reset_after=_us(reply[5 + 4 * i]),
            )
            for i, core in enumerate(self.cores)
        ]
        if consume and _metrics.on:
            allowed = all(d.allowed for d in decisions)
            _metrics.LIMITER_DECISIONS.record(self._allowed if allowed else self._refused)
        return decisions, int(reply[0])

    def hit(self, key: object, cost: object) -> Plan[Decision]:
        decisions, _ = yield from self.decide(key, cost)
        return combine(decisions)

    def peek(self, key: object) -> Plan[Decision]:
        decisions, _ = yield from self.decide(key, 1, consume=False)
        return combine(decisions)

    def enforce(self, key: object, cost: object) -> Plan[Decision]:
        return _enforced((yield from self.hit(key, cost)))

    def reset(self, key: object) -> Plan[None]:
        raw = check_name(key, "key")
        yield Command(("DEL", *(c.key(raw) for c in self.cores)))


def plans_for(cores: Sequence[LimiterCore], *, packed: bool) -> SingleCore | MultiCore:
    """The plans of a limiter over ``cores``: one limit's own lean script (with packed replies
    if ``packed``), or the general one."""
    checked = check_cores(cores)
    return SingleCore(checked[0], packed=packed) if len(checked) == 1 else MultiCore(checked)
