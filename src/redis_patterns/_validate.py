"""Argument checks shared by every pattern; each raises before any I/O, naming the argument."""

from __future__ import annotations

import math
from datetime import timedelta

from ._errors import ConfigurationError

__all__ = ["Duration", "check_int", "duration_ms", "optional_duration_ms"]

Duration = float | int | timedelta

_MAX_MS = 2**63 - 1


def duration_ms(value: object, what: str, *, allow_zero: bool = False) -> int:
    """Convert a duration in seconds (int, float or timedelta) to whole milliseconds.

    Refuses bool, NaN, infinities, negatives, zero (unless ``allow_zero``), values that round
    to 0 ms, and values beyond what the server can store.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigurationError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    if seconds > _MAX_MS / 1000:  # before multiplying: a huge float times 1000 is inf
        raise ConfigurationError(f"{what} is too large: {value!r}")
    ms = round(seconds * 1000)
    if ms == 0 and not allow_zero:
        raise ConfigurationError(f"{what} must be at least 1 ms, got {value!r} s")
    if ms > _MAX_MS:
        raise ConfigurationError(f"{what} is too large: {value!r}")
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
