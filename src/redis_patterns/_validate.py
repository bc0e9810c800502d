"""Argument checks shared by every pattern; each raises before any I/O, naming the argument."""

from __future__ import annotations

import math
from datetime import timedelta

from ._errors import ConfigurationError

__all__ = ["MAX_DURATION_MS", "Duration", "check_int", "duration_ms", "optional_duration_ms"]

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
        raise ConfigurationError(
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


def check_int(value: object, what: str, *, minimum: int | None = None) -> int:
    """Require an int (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{what} must be >= {minimum}, got {value}")
    return value
