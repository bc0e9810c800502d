"""Shared background schedulers: one thread per process, one task per event loop, for all jobs.

Periodic work (a lock watchdog's renewals) must not cost a thread or a task per object. A job is
a callable returning the delay until its next run, or ``None`` to stop; `ThreadTicker` runs the
blocking ones on one daemon thread, `LoopTicker` the coroutine ones on one task per event loop.
Both exit when they have nothing left to do and start again on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

__all__ = ["Handle", "LoopTicker", "ThreadTicker", "loop_ticker", "thread_ticker"]

log = logging.getLogger("redis_patterns")

SyncJob = Callable[[], "float | None"]
AsyncJob = Callable[[], Awaitable["float | None"]]

THREAD_NAME = "redis-patterns-renewer"
# An idle scheduler thread lingers this long before exiting (avoids churn between locks).
_IDLE_EXIT = 2.0


class Handle:
    """Returned by ``add``: `cancel` stops the job before its next run (a running one finishes)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


_Entry = tuple[float, int, Handle, object]


class ThreadTicker:
    """Runs blocking jobs on one shared daemon thread, each at its own due time."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._heap: list[_Entry] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._seq = itertools.count()

    def add(self, job: SyncJob, delay: float) -> Handle:
        handle = Handle()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle, job))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def _next(self) -> tuple[Handle, SyncJob] | None:
        with self._cond:
            idle_since: float | None = None
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if not self._heap:
                    idle_since = idle_since or now
                    if now - idle_since >= _IDLE_EXIT:
                        self._thread = None
                        return None
                    self._cond.wait(_IDLE_EXIT)
                    continue
                idle_since = None
                due, _, handle, job = self._heap[0]
                if due <= now:
                    heapq.heappop(self._heap)
                    return handle, job  # type: ignore[return-value]
                self._cond.wait(due - now)

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            handle, job = item
            try:
                delay = job()
            except Exception:  # a job must never kill the shared thread
                log.exception("background job %r failed", job)
                delay = None
            if delay is not None and not handle.cancelled:
                with self._cond:
                    entry = (time.monotonic() + delay, next(self._seq), handle, job)
                    heapq.heappush(self._heap, entry)


class LoopTicker:
    """Runs coroutine jobs on one task of one event loop; due jobs run concurrently."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, job: AsyncJob, delay: float) -> Handle:
        handle = Handle()
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle, job))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=THREAD_NAME)
        self._wake.set()
        return handle

    async def _run(self, handle: Handle, job: AsyncJob) -> None:
        try:
            delay = await job()
        except Exception:
            log.exception("background job %r failed", job)
            delay = None
        if delay is not None and not handle.cancelled:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle, job))

    async def _loop(self) -> None:
        while True:
            while self._heap and self._heap[0][2].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                return
            now = time.monotonic()
            due: list[tuple[Handle, AsyncJob]] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, handle, job = heapq.heappop(self._heap)
                if not handle.cancelled:
                    due.append((handle, job))  # type: ignore[arg-type]
            if due:
                await asyncio.gather(*(self._run(h, j) for h, j in due))
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._heap[0][0] - now)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task


_thread_ticker = ThreadTicker()
_loop_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopTicker] = (
    weakref.WeakKeyDictionary()
)

# A forked child inherits the ticker's state but not its thread (nor a sane lock).
os.register_at_fork(after_in_child=_thread_ticker._reset)


def thread_ticker() -> ThreadTicker:
    """The process-wide scheduler thread for blocking jobs."""
    return _thread_ticker


def loop_ticker() -> LoopTicker:
    """The scheduler of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    ticker = _loop_tickers.get(loop)
    if ticker is None:
        ticker = _loop_tickers[loop] = LoopTicker()
    return ticker
