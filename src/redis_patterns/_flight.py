"""Single-flight: one call per key at a time in this process; the others share its outcome."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["AsyncSingleFlight", "SingleFlight"]

T = TypeVar("T")


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Threads asking for the same key while a call is running wait for it instead of calling.

    The leader's exception is raised in every waiter too; nothing is cached after the call ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def do(self, key: Hashable, func: Callable[[], T]) -> T:
        """Run ``func`` unless a call for ``key`` is in flight; then wait for and share that."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            result: T = call.value
            return result
        try:
            call.value = func()
            return call.value  # type: ignore[no-any-return]
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()


class _LeaderCancelled(Exception):
    """The leading task was cancelled: a waiter must try again (and may lead)."""


class AsyncSingleFlight:
    """`SingleFlight` for asyncio tasks, kept per event loop (futures belong to one loop)."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[Any]]
        ] = weakref.WeakKeyDictionary()

    async def do(self, key: Hashable, func: Callable[[], Awaitable[T]]) -> T:
        """Await ``func()`` unless a call for ``key`` is in flight on this loop; then share it."""
        loop = asyncio.get_running_loop()
        calls = self._loops.setdefault(loop, {})
        for _ in range(100):  # bounded: each retry follows a cancelled leader
            future = calls.get(key)
            if future is not None:
                try:
                    result: T = await asyncio.shield(future)
                except _LeaderCancelled:
                    continue
                return result
            future = calls[key] = loop.create_future()
            try:
                value = await func()
            except asyncio.CancelledError:
                future.set_exception(_LeaderCancelled())
                future.exception()  # retrieved: no "never retrieved" log when nobody waits
                raise
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()
                raise
            else:
                future.set_result(value)
                return value
            finally:
                del calls[key]
        raise RuntimeError("single-flight: too many cancelled leaders in a row")
