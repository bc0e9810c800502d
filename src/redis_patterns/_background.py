"""Background work: shared schedulers (one thread per process, one task per event loop, for all
jobs), and `Daemon` / `AsyncDaemon` for one long-running reader.

Periodic work (a lock watchdog's renewals) must not cost a thread or a task per object. A job is
a function of its *owner* returning the delay until its next run, or ``None`` to stop;
`ThreadTicker` runs the blocking ones on one daemon thread, `LoopTicker` the coroutine ones on one
task per event loop. Both exit when they have nothing left to do and start again on demand.

The scheduler holds the owner only weakly: a job must never keep its object alive (a dropped
auto-renewing lock would otherwise be renewed forever and nobody could take it again). When the
owner is collected while its job is scheduled, the job is cancelled and, if asked, a
`ResourceWarning` says so.
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
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = [
    "AsyncDaemon",
    "Daemon",
    "Handle",
    "LoopTicker",
    "ThreadTicker",
    "loop_ticker",
    "thread_ticker",
]

log = logging.getLogger("redis_patterns")

T = TypeVar("T")
# Jobs take their owner as an argument (never a bound method or a closure over it: those would
# hold it strongly); the scheduler passes it in from a weak reference.
SyncJob = Callable[[T], "float | None"]
AsyncJob = Callable[[T], Awaitable["float | None"]]

THREAD_NAME = "redis-patterns-renewer"
# An idle scheduler thread lingers this long before exiting (avoids churn between locks).
_IDLE_EXIT = 2.0


class Handle:
    """Returned by ``add``: `cancel` stops the job before its next run (a running one finishes).

    ``cancelled`` is also set once the job stopped by itself (returned ``None`` or raised) or
    its owner was collected: it will not run again.
    """

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Job:
    """A scheduled job: the function, a weak reference to its owner, and its handle."""

    __slots__ = ("func", "handle", "owner")

    def __init__(
        self, func: Callable[[Any], Any], owner: object, handle: Handle, dropped: str | None
    ) -> None:
        if getattr(func, "__self__", None) is owner:
            raise TypeError("a background job must not be a bound method of its owner")

        # The callback closes over the handle and the text only, never over the owner.
        def collected(_: object) -> None:
            if not handle.cancelled:
                handle.cancel()
                if dropped is not None:
                    warnings.warn(dropped, ResourceWarning, stacklevel=1)

        self.func = func
        self.owner = weakref.ref(owner, collected)
        self.handle = handle

    def __repr__(self) -> str:
        return f"<job {getattr(self.func, '__qualname__', self.func)!r} of {self.owner()!r}>"


_Entry = tuple[float, int, _Job]


class ThreadTicker:
    """Runs blocking jobs on one shared daemon thread, each at its own due time."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._heap: list[_Entry] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._seq = itertools.count()

    def add(self, job: SyncJob[T], owner: T, delay: float, *, dropped: str | None = None) -> Handle:
        """Run ``job(owner)`` after ``delay`` s, then again after each delay it returns.

        ``owner`` is held weakly; if it is collected first the job stops, and ``dropped``
        (when given) is emitted as a `ResourceWarning`.
        """
        handle = Handle()
        entry = _Job(job, owner, handle, dropped)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), entry))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def _next(self) -> _Job | None:
        with self._cond:
            idle_since: float | None = None
            while True:
                while self._heap and self._heap[0][2].handle.cancelled:
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
                due, _, job = self._heap[0]
                if due <= now:
                    heapq.heappop(self._heap)
                    return job
                self._cond.wait(due - now)

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            delay = _run_sync(job)
            if delay is None:
                job.handle.cancel()  # done: a later collection of the owner is no news
            elif not job.handle.cancelled:
                with self._cond:
                    heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), job))


def _run_sync(job: _Job) -> float | None:
    owner = job.owner()
    if owner is None:
        return None
    try:
        delay: float | None = job.func(owner)
    except Exception:  # a job must never kill the shared thread
        log.exception("background job %r failed", job)
        return None
    # `owner` goes out of scope on return: if it was the last reference, the owner is
    # collected now and its handle cancelled before the caller reschedules.
    return delay


class LoopTicker:
    """Runs coroutine jobs on one task of one event loop; due jobs run concurrently."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(
        self, job: AsyncJob[T], owner: T, delay: float, *, dropped: str | None = None
    ) -> Handle:
        """Run ``await job(owner)`` after ``delay`` s, then again after each delay it returns.

        ``owner`` is held weakly; if it is collected first the job stops, and ``dropped``
        (when given) is emitted as a `ResourceWarning`.
        """
        handle = Handle()
        heapq.heappush(
            self._heap,
            (time.monotonic() + delay, next(self._seq), _Job(job, owner, handle, dropped)),
        )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=THREAD_NAME)
        self._wake.set()
        return handle

    async def _run(self, job: _Job) -> None:
        delay = await _run_async(job)
        if delay is None:
            job.handle.cancel()  # done: a later collection of the owner is no news
        elif not job.handle.cancelled:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), job))

    async def _loop(self) -> None:
        while True:
            while self._heap and self._heap[0][2].handle.cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                return
            now = time.monotonic()
            due: list[_Job] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, job = heapq.heappop(self._heap)
                if not job.handle.cancelled:
                    due.append(job)
            if due:
                await asyncio.gather(*(self._run(j) for j in due))
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._heap[0][0] - now)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task


async def _run_async(job: _Job) -> float | None:
    owner = job.owner()
    if owner is None:
        return None
    try:
        delay: float | None = await job.func(owner)
    except Exception:
        log.exception("background job %r failed", job)
        return None
    return delay  # as in `_run_sync`, the owner may be collected right here


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


class Daemon:
    """Runs ``target(*args)`` on a daemon thread of its own (a background reader)."""

    def __init__(self, target: Callable[..., object], *args: object, name: str) -> None:
        self._thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the thread to end (at once when called from it)."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class AsyncDaemon:
    """Runs ``await target(*args)`` as a task of the running event loop (a background reader)."""

    def __init__(
        self, target: Callable[..., Coroutine[Any, Any, object]], *args: object, name: str
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(target(*args), name=name)

    @property
    def alive(self) -> bool:
        """Whether the task still runs, on the event loop running now.

        A task of a loop that has been closed (``asyncio.run`` called again, a test's loop) can
        die without running its cleanup, so this is checked on every use.
        """
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return current is self._loop and not self._task.done()

    async def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the task to end, then cancel it (not from itself)."""
        if asyncio.current_task() is self._task or not self.alive:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
        except asyncio.CancelledError:
            self._task.cancel()  # the caller was cancelled: do not leave the reader behind
            raise
