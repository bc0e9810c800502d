"""Argument checks shared by every pattern; each raises before any I/O, naming the argument.

Every refusal is a `ConfigurationError`; one of the wrong type is a `ConfigurationTypeError`,
which is also a ``TypeError``.
"""

from __future__ import annotations

import inspect
import math
from datetime import timedelta

from ._errors import ConfigurationError, ConfigurationTypeError

__all__ = [
    "MAX_DURATION_MS",
    "Duration",
    "check_bool",
    "check_callable",
    "check_instance",
    "check_int",
    "check_number",
    "duration_ms",
    "optional_duration_ms",
]

Duration = float | int | timedelta

# The longest duration any pattern accepts: 10^9 s (about 31.7 years). Scripts compute in
# doubles, exact only below 2^53; the tightest is the sliding window counter, which computes
# server time in µs plus two windows: with this bound that stays below 2^53 until the server
# clock reads the year 2191. Millisecond scripts (locks, cache, sessions, streams) are far
# from their limits here, and so are the server's own PX/PEXPIRE and Python's timeouts.
MAX_DURATION_MS = 10**12


def duration_ms(value: object, what: str, *, allow_zero: bool = False) -> int:
    """Convert a duration in seconds (int, float or timedelta) to whole milliseconds.

    Refuses bool, NaN, infinities, negatives, zero (unless ``allow_zero``), values that round
    to 0 ms, and values above `MAX_DURATION_MS` (10^9 s, about 31.7 years), beyond which the
    scripts' arithmetic would no longer be exact.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationTypeError(
            f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    elif isinstance(value, int) and abs(value) > 10**300:
        seconds = 1e300 if value > 0 else -1e300  # float() of an int beyond ~1.8e308 raises
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigurationError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    # compare before multiplying: a huge float times 1000 is inf
    ms = round(seconds * 1000) if seconds <= MAX_DURATION_MS else MAX_DURATION_MS + 1
    if ms == 0 and not allow_zero:
        raise ConfigurationError(f"{what} must be at least 1 ms, got {value!r} s")
    if ms > MAX_DURATION_MS:
        raise ConfigurationError(
            f"{what} must be at most {MAX_DURATION_MS // 1000} s (about 31 years), "
            f"got {seconds!r} s"
        )
    return ms


def optional_duration_ms(value: object, what: str) -> int | None:
    """`duration_ms`, with ``None`` passed through (meaning "no limit")."""
    return None if value is None else duration_ms(value, what)


def check_instance(value: object, kind: type, what: str) -> None:
    """Require an instance of ``kind`` (e.g. the queue a worker consumes)."""
    if not isinstance(value, kind):
        raise ConfigurationTypeError(
            f"{what} must be an instance of {kind.__name__}, not {type(value).__name__}"
        )


def check_int(value: object, what: str, *, minimum: int | None = None) -> int:
    """Require an int (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationTypeError(f"{what} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_number(
    value: object,
    what: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """Require a finite int or float (not bool), within ``[minimum, maximum]``, ``> 0`` when
    ``positive``. Returns the value as given (an int stays an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationTypeError(f"{what} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any double: no repr, it may be thousands of digits
        raise ConfigurationError(f"{what} is too large (beyond a double)") from None
    if math.isnan(number):
        raise ConfigurationError(f"{what} must not be NaN")
    if math.isinf(number):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if positive and number <= 0:
        raise ConfigurationError(f"{what} must be > 0, got {value!r}")
    low = minimum is not None and number < minimum
    high = maximum is not None and number > maximum
    if low or high:
        if minimum is not None and maximum is not None:
            wanted = f"within [{minimum:g}, {maximum:g}]"
        else:
            wanted = f">= {minimum:g}" if minimum is not None else f"<= {maximum:g}"
        raise ConfigurationError(f"{what} must be {wanted}, got {value!r}")
    return value


def check_bool(value: object, what: str) -> bool:
    """Require a bool (not merely something truthy: ``1`` or ``"yes"`` is refused)."""
    if not isinstance(value, bool):
        raise ConfigurationTypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


def check_callable(
    value: object, what: str, *, optional: bool = False, async_twin: str | None = None
) -> None:
    """Require a callable (``None`` too when ``optional``).

    ``async_twin`` (for a sync API) refuses a coroutine function too, naming the async API to
    use instead: called from sync code it would return a coroutine that nobody awaits.
    """
    if not (callable(value) or (optional and value is None)):
        raise ConfigurationTypeError(f"{what} must be callable, not {type(value).__name__}")
    if async_twin is not None and inspect.iscoroutinefunction(value):
        raise ConfigurationTypeError(
            f"{what} is a coroutine function: use {async_twin} with an asyncio client"
        )
