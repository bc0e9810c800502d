"""The shared schedulers on their own (no server): jobs hold their owner weakly."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

import pytest

from redis_patterns._background import Handle, LoopTicker, ThreadTicker


class Owner:
    def __init__(self, runs: int = 1_000_000) -> None:
        self.left = runs
        self.ran = threading.Event()

    def tick(self) -> float | None:
        self.ran.set()
        self.left -= 1
        return 0.01 if self.left > 0 else None


def _tick(owner: Owner) -> float | None:
    return owner.tick()


async def _atick(owner: Owner) -> float | None:
    return owner.tick()


def _drop(holder: list[Owner], handle: Handle) -> None:
    holder.clear()
    gc.collect()
    # The thread may have been running the job: the owner dies when that run returns.
    for _ in range(1000):
        if handle.cancelled:
            return
        threading.Event().wait(0.01)


def test_a_collected_owner_stops_its_job_and_warns_once() -> None:
    # Objects an earlier test left for the collector (redis-py's asyncio cluster client leaves
    # ClusterNode objects behind, each warning when collected) must not be collected inside
    # this test's window, where any ResourceWarning is an error or would be counted as ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    ticker = ThreadTicker()
    holder = [Owner()]
    handle = ticker.add(_tick, holder[0], 0, dropped="owner dropped")
    assert holder[0].ran.wait(10)
    with pytest.warns(ResourceWarning, match="^owner dropped$") as warned:
        _drop(holder, handle)
    assert handle.cancelled
    assert len(warned) == 1  # a second one would be an error (filterwarnings) in a callback


def test_no_warning_once_the_job_is_over() -> None:
    ticker = ThreadTicker()
    finished, cancelled = Owner(runs=1), Owner()
    done = ticker.add(_tick, finished, 0, dropped="finished dropped")
    stopped = ticker.add(_tick, cancelled, 0, dropped="cancelled dropped")
    assert finished.ran.wait(10)
    assert cancelled.ran.wait(10)
    stopped.cancel()
    for _ in range(1000):  # the job's last run has returned
        if done.cancelled:
            break
        threading.Event().wait(0.01)
    assert done.cancelled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del finished, cancelled
        gc.collect()


def test_a_bound_method_of_the_owner_is_refused() -> None:
    owner = Owner()
    with pytest.raises(TypeError, match="bound method"):
        ThreadTicker().add(Owner.tick.__get__(owner), owner, 0)


async def test_loop_ticker_holds_its_owner_weakly() -> None:
    ticker = LoopTicker()
    holder = [Owner()]
    handle = ticker.add(_atick, holder[0], 0, dropped="async owner dropped")
    for _ in range(1000):
        if holder[0].ran.is_set():
            break
        await asyncio.sleep(0.01)
    with pytest.warns(ResourceWarning, match="^async owner dropped$") as warned:
        _drop(holder, handle)  # between two runs: the loop is ours while this runs
    assert handle.cancelled
    assert len(warned) == 1
    task = ticker.task
    assert task is not None
    await asyncio.wait_for(task, 10)  # nothing left to run: the task ends by itself
