"""Single-flight: one call per key at a time in this process; the others share its outcome.

Written for plans (the cache core's `Flights`): `join` (no waiting) says whether the caller
leads; a leader runs the work and reports its outcome with `leave`; a follower waits with
`wait` (blocking, or a coroutine for the asyncio flavour), which a plan calls through the
`Call` effect, and gets ``(True, value)``, or ``(False, None)`` if the leader was cancelled
(try again: it may lead now).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Hashable
from typing import Any

__all__ = ["AsyncSingleFlight", "SingleFlight"]


class _LeaderCancelled(Exception):
    """The leading task was cancelled: a follower must try again (and may lead)."""


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Threads asking for the same key while a call is running wait for it instead of calling.

    The leader's exception is raised in every follower too; nothing is kept after the call ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def join(self, key: Hashable) -> _Call | None:
        """None if the caller leads (it must `leave`), else the call in flight to `wait` for."""
        with self._lock:
            call = self._calls.get(key)
            if call is None:
                self._calls[key] = _Call()
            return call

    def leave(self, key: Hashable, value: Any = None, error: BaseException | None = None) -> None:
        """The leader's outcome: wake the followers with it and end the flight."""
        with self._lock:
            call = self._calls.pop(key)
        call.value, call.error = value, error
        call.done.set()

    @staticmethod
    def wait(call: _Call) -> tuple[bool, Any]:
        """``(True, the leader's value)`` (or its exception raised), once it left."""
        call.done.wait()
        if call.error is not None:
            raise call.error
        return True, call.value


class AsyncSingleFlight:
    """`SingleFlight` for asyncio tasks, kept per event loop (futures belong to one loop)."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[Any]]
        ] = weakref.WeakKeyDictionary()

    def _calls(self) -> dict[Hashable, asyncio.Future[Any]]:
        return self._loops.setdefault(asyncio.get_running_loop(), {})

    def join(self, key: Hashable) -> asyncio.Future[Any] | None:
        """None if the calling task leads (it must `leave`), else the future to `wait` for."""
        calls = self._calls()
        future = calls.get(key)
        if future is None:
            calls[key] = asyncio.get_running_loop().create_future()
        return future

    def leave(self, key: Hashable, value: Any = None, error: BaseException | None = None) -> None:
        """The leader's outcome; a cancelled leader makes its followers try again."""
        future = self._calls().pop(key)
        if error is None:
            future.set_result(value)
            return
        future.set_exception(
            _LeaderCancelled() if isinstance(error, asyncio.CancelledError) else error
        )
        future.exception()  # retrieved: no "never retrieved" log when nobody waits

    @staticmethod
    async def wait(future: asyncio.Future[Any]) -> tuple[bool, Any]:
        """``(True, the leader's value)`` (or its exception raised), ``(False, None)`` if the
        leader was cancelled; shielded: a cancelled follower leaves the outcome to the others."""
        try:
            return True, await asyncio.shield(future)
        except _LeaderCancelled:
            return False, None
