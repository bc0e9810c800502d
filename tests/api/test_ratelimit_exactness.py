"""Exact under concurrency (threads, tasks, processes), on server time, whatever the client clock.

Scenario 11 of RELIABILITY.md (exactness) and the client-clock half of scenario 14.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_patterns import (
    GCRA,
    AsyncFixedWindow,
    AsyncGCRA,
    AsyncSlidingLog,
    AsyncSlidingWindow,
    AsyncTokenBucket,
    Decision,
    FixedWindow,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from redis_patterns._core import ratelimit as core
from redis_patterns.testing.pytest_plugin import FAKETIME_LIB as _FAKETIME_PATH
from redis_patterns.testing.pytest_plugin import Backend, faketime_or_skip

# Each kind with no refill to speak of within a test (a day-long window or period).
DAY = 86400.0
SYNC: dict[str, Callable[[Any, int], RateLimiter]] = {
    "fixed": lambda c, n: FixedWindow(c, n, DAY),
    "log": lambda c, n: SlidingLog(c, n, DAY),
    "sliding": lambda c, n: SlidingWindow(c, n, DAY),
    "bucket": lambda c, n: TokenBucket(c, n, 1e-6),
    "gcra": lambda c, n: GCRA(c, 1, DAY, burst=n),
}
ASYNC: dict[str, Callable[[Any, int], Any]] = {
    "fixed": lambda c, n: AsyncFixedWindow(c, n, DAY),
    "log": lambda c, n: AsyncSlidingLog(c, n, DAY),
    "sliding": lambda c, n: AsyncSlidingWindow(c, n, DAY),
    "bucket": lambda c, n: AsyncTokenBucket(c, n, 1e-6),
    "gcra": lambda c, n: AsyncGCRA(c, 1, DAY, burst=n),
}
KINDS = list(SYNC)


def away_from_day_edge(client: Any) -> None:
    """Window-based limiters align windows to the epoch: do not start a test just before one."""
    seconds, _ = client.time()
    left = DAY - seconds % DAY
    if left < 120:
        time.sleep(left + 0.1)


WORKER = Path(__file__).with_name("ratelimit_worker.py")
LIMIT = 100
SPEC_ARGS: dict[str, tuple[str, list[Any]]] = {
    "fixed": ("FixedWindow", [LIMIT, DAY]),
    "log": ("SlidingLog", [LIMIT, DAY]),
    "sliding": ("SlidingWindow", [LIMIT, DAY]),
    "bucket": ("TokenBucket", [LIMIT, 1e-6]),
    "gcra": ("GCRA", [1, DAY, LIMIT]),
}
FAKETIME_LIB = Path(_FAKETIME_PATH)


def url_of(backend: Backend) -> str:
    if backend.embedded_cluster is not None:
        return backend.embedded_cluster.url
    return backend.servers[0].url


# All window-based kinds start on a fresh key away from a window edge (away_from_day_edge), so
# even the sliding window counter, whose documented error comes only from the previous
# window's weight, must admit exactly the limit here.


@pytest.mark.parametrize("kind", KINDS)
def test_sixteen_threads_admit_exactly_the_limit(
    backend: Backend, prefix: str, kind: str, scale: Any
) -> None:
    client = backend.client()
    away_from_day_edge(client)
    limiter = SYNC[kind](client, LIMIT)
    threads_n, hits = 16, scale(50, 125)
    admitted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads_n)

    def work() -> None:
        barrier.wait()
        for _ in range(hits):
            if limiter.hit(f"{prefix}:u").allowed:
                with lock:
                    admitted.append(1)

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(admitted) == LIMIT
    assert limiter.peek(f"{prefix}:u").remaining == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_two_hundred_tasks_admit_exactly_the_limit(
    backend: Backend, prefix: str, kind: str, scale: Any
) -> None:
    client = backend.async_client()
    away_from_day_edge(backend.client())
    limiter = ASYNC[kind](client, LIMIT)
    hits = scale(3, 10)
    # Initialise the client before the fan-out: redis-py's asyncio cluster client, used cold by
    # 200 tasks at once, intermittently fails inside its own connect (writer is None).
    await client.ping()

    async def work() -> int:
        return sum([(await limiter.hit(f"{prefix}:u")).allowed for _ in range(hits)])

    counts = await asyncio.gather(*(work() for _ in range(200)))
    assert sum(counts) == LIMIT
    await client.aclose()


@pytest.mark.parametrize("kind", KINDS)
def test_costs_add_up_exactly_under_threads(backend: Backend, prefix: str, kind: str) -> None:
    client = backend.client()
    away_from_day_edge(client)
    limiter = SYNC[kind](client, LIMIT)
    admitted: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            if limiter.hit(f"{prefix}:u", 3).allowed:
                with lock:
                    admitted.append(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(admitted) == 99  # 33 hits of 3; the last unit can never take a hit of 3
    assert limiter.peek(f"{prefix}:u").remaining == 1


def run_workers(
    backend: Backend, key: str, hits: int, threads: int, envs: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Run one worker process per env, each hitting every kind (one key per kind)."""
    spec = {
        "url": url_of(backend),
        "cluster": backend.is_cluster,
        "limiters": SPEC_ARGS,
        "key": key,
        "hits": hits,
        "threads": threads,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        for env in envs
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append(json.loads(out))
    return outputs


def test_four_processes_admit_exactly_the_limit(backend: Backend, prefix: str, scale: Any) -> None:
    away_from_day_edge(backend.client())
    outputs = run_workers(backend, f"{prefix}:u", scale(20, 125), 4, [{}] * 4)
    for kind in KINDS:
        admitted = sum(r[0] for out in outputs for r in out["results"][kind])
        assert admitted == LIMIT, kind


@pytest.mark.fault
def test_scenario_11_processes_threads_and_tasks_at_once(
    backend: Backend, prefix: str, scale: Any
) -> None:
    """RELIABILITY 11: 2 processes x 8 threads and 200 asyncio tasks hit one key together;
    limit 50: every kind admits exactly 50 in all."""
    away_from_day_edge(backend.client())
    limit = 50
    limiters = {
        "fixed": ["FixedWindow", [limit, DAY]],
        "log": ["SlidingLog", [limit, DAY]],
        "sliding": ["SlidingWindow", [limit, DAY]],
        "bucket": ["TokenBucket", [limit, 1e-6]],
        "gcra": ["GCRA", [1, DAY, limit]],
    }
    key = f"{prefix}:u"
    spec = {
        "url": url_of(backend),
        "cluster": backend.is_cluster,
        "wait": True,
        "limiters": limiters,
        "key": key,
        "hits": scale(10, 60),
        "threads": 8,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
    per_task = scale(2, 5)

    async def tasks() -> dict[str, int]:
        client = backend.async_client()
        await client.ping()
        mine = {label: ASYNC[label](client, limit) for label in limiters}

        async def task(label: str) -> int:
            hits = [(await mine[label].hit(f"{key}:{label}")).allowed for _ in range(per_task)]
            return sum(hits)

        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        counts: dict[str, int] = {}
        for label in limiters:  # the workers go through the kinds in the same order
            counts[label] = sum(await asyncio.gather(*(task(label) for _ in range(200))))
        await client.aclose()
        return counts

    ours = asyncio.run(tasks())
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append(json.loads(out.splitlines()[-1]))
    for label in limiters:
        theirs = sum(r[0] for out in outputs for r in out["results"][label])
        assert ours[label] + theirs == limit, label


# --- server time --------------------------------------------------------------------------


def faketime_env(offset: str) -> dict[str, str]:
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": offset, "FAKETIME_NO_CACHE": "1"}


def test_client_clock_jumps_change_no_decision(backend: Backend, prefix: str) -> None:
    """Clients at +1 h and -1 h (libfaketime) share one limit exactly, as if clocks agreed."""
    faketime_or_skip()
    away_from_day_edge(backend.client())
    key = f"{prefix}:u"
    # sequentially: +1 h takes 60, then -1 h asks 60 more (gets 40), then +1 h asks again
    ahead = run_workers(backend, key, 60, 1, [faketime_env("+1h")])[0]
    behind = run_workers(backend, key, 60, 1, [faketime_env("-1h")])[0]
    again = run_workers(backend, key, 10, 1, [faketime_env("+1h")])[0]
    # the fake clocks really were an hour off
    assert ahead["clock"] - time.time() == pytest.approx(3600, abs=60)
    assert behind["clock"] - time.time() == pytest.approx(-3600, abs=60)
    for kind in KINDS:
        assert [r[0] for r in ahead["results"][kind]] == [True] * 60, kind
        assert [r[0] for r in behind["results"][kind]] == [True] * 40 + [False] * 20, kind
        assert [r[1] for r in behind["results"][kind]][:40] == list(range(39, -1, -1)), kind
        assert [r[0] for r in again["results"][kind]] == [False] * 10, kind


@pytest.mark.parametrize("kind", KINDS)
def test_in_process_clock_jump_changes_no_decision(
    client: Any, prefix: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without libfaketime: the limiter never reads time.time/monotonic, so jumps do nothing."""
    away_from_day_edge(client)
    limiter = SYNC[kind](client, 4)
    real_time, real_mono = time.time, time.monotonic
    results = []
    for jump in (3600.0, -3600.0, 7200.0, -7200.0, 0.0):
        monkeypatch.setattr(time, "time", lambda j=jump: real_time() + j)
        monkeypatch.setattr(time, "monotonic", lambda j=jump: real_mono() + j)
        results.append(limiter.hit(f"{prefix}:u").allowed)
    monkeypatch.undo()
    assert results == [True, True, True, True, False]


# --- sliding log: no window ever holds more than the limit (hypothesis, server time) ----------

# Each algorithm has its own lean script for a limiter with one limit, and MultiLimit runs the
# general one: both keep the same state, so the schedules below run on either, or alternate.
SCRIPTS = ["lean", "general", "mixed"]


def timed_hit(limiter: RateLimiter, key: str, cost: int, script: str, i: int) -> tuple[Any, int]:
    """(decision, server time in µs the script decided on) of one hit."""
    if script == "general" or (script == "mixed" and i % 2):
        plan = core.MultiCore(limiter._cores).decide(key, cost)
        decisions, now = limiter._runner.run(plan)
        return decisions[0], now
    single = limiter._plans
    assert isinstance(single, core.SingleCore)
    decision, now = limiter._runner.run(single.timed_hit(key, cost))
    return decision, now


@pytest.mark.backends("valkey")
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limit=st.integers(1, 5),
    window_ms=st.integers(20, 120),
    schedule=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 5)), min_size=5, max_size=40),
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_sliding_log_never_exceeds_the_limit_in_any_window(
    client: Any,
    prefix: str,
    script: str,
    limit: int,
    window_ms: int,
    schedule: list[tuple[int, int]],
) -> None:
    limiter = SlidingLog(client, limit, window_ms / 1000)
    key = f"{prefix}:{time.monotonic_ns()}"
    window_us = window_ms * 1000
    admitted: list[tuple[int, int]] = []  # (server time in µs, cost)
    refused: list[tuple[int, int, Decision]] = []

    def in_window(end: int) -> int:
        return sum(c for t, c in admitted if end - window_us < t <= end)

    for i, (pause_ms, raw_cost) in enumerate(schedule):
        time.sleep(pause_ms / 1000)
        cost = min(raw_cost, limit)
        decision, now = timed_hit(limiter, key, cost, script, i)
        if decision.allowed:
            admitted.append((now, cost))
            assert decision.remaining == limit - in_window(now)
        else:
            refused.append((now, cost, decision))

    # no window-length interval holds more than the limit: checking the ones ending at each
    # admitted hit suffices (any interval's content is contained in one of those)
    for t, _ in admitted:
        assert in_window(t) <= limit
    # and it is exact, not just conservative: a refusal means the hit did not fit, and its
    # retry_after is when enough of the oldest units in the window have left it
    for t, cost, decision in refused:
        assert in_window(t) + cost > limit
        assert decision.remaining == limit - in_window(t)
        need, held = in_window(t) + cost - limit, 0
        for at, units in sorted(a for a in admitted if t - window_us < a[0] <= t):
            held += units
            if held >= need:
                assert decision.retry_after == max(1, at + window_us - t) / 1_000_000
                break


@pytest.mark.backends("valkey")
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limit=st.integers(1, 6),
    window_ms=st.integers(30, 120),
    schedule=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 4)), min_size=5, max_size=40),
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_sliding_window_stays_within_its_documented_error(
    client: Any,
    prefix: str,
    script: str,
    limit: int,
    window_ms: int,
    schedule: list[tuple[int, int]],
) -> None:
    """The two-counter approximation, checked against its own formula on server time: within
    one aligned window never above the limit; over any window length at most
    limit + previous * elapsed / window (< 2 x limit); and a refusal means the estimate was full."""
    limiter = SlidingWindow(client, limit, window_ms / 1000)
    key = f"{prefix}:{time.monotonic_ns()}"
    w = window_ms * 1000
    admitted: list[tuple[int, int]] = []
    for i, (pause_ms, raw_cost) in enumerate(schedule):
        time.sleep(pause_ms / 1000)
        cost = min(raw_cost, limit)
        decision, now = timed_hit(limiter, key, cost, script, i)
        index, elapsed = divmod(now, w)
        cur = sum(c for t, c in admitted if t // w == index)
        prev = sum(c for t, c in admitted if t // w == index - 1)
        estimate = prev * (w - elapsed) / w + cur
        if decision.allowed:
            assert estimate + cost <= limit + 1e-6
            admitted.append((now, cost))
            assert cur + cost <= limit  # one aligned window never holds more than the limit
            in_window = sum(c for t, c in admitted if now - w < t <= now)
            assert in_window <= limit + prev * elapsed / w + 1e-6 < 2 * limit + 1e-6
        else:
            assert estimate + cost > limit - 1e-6
