"""Calling user callbacks (``on_lost``, ``on_gap``) the same way from sync and async facades."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["acall_back", "call_back"]

log = logging.getLogger("redis_patterns")


async def acall_back(func: Callable[..., Any], *args: Any) -> None:
    """Call ``func(*args)`` from async code, awaiting it when it is a coroutine function."""
    result = func(*args)
    if inspect.isawaitable(result):
        await result


def call_back(func: Callable[..., Any], *args: Any) -> None:
    """Call ``func(*args)`` from sync code; an async callback cannot run here, so say so."""
    result = func(*args)
    if inspect.iscoroutine(result):
        result.close()  # never awaited: close it rather than leak a warning at collection
        log.error(
            "callback %r is async; the sync class cannot await it (use the Async class)", func
        )
