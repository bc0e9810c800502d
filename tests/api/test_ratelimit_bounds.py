"""Limiter inputs at their bounds: the largest accepted ones are fast and exact; one more fails.

The server work of a hit never depends on its cost: the largest limits, costs and durations,
with the most prior hits a limiter can hold, stay out of a SLOWLOG set to 10 ms, and a
sliding log's memory grows with hits, not with units.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from redis_patterns import (
    GCRA,
    ConfigurationError,
    Decision,
    EmbeddedServer,
    FixedWindow,
    MultiLimit,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from redis_patterns._core import ratelimit as core
from redis_patterns._core.ratelimit import MAX_LIMITS, MAX_LOG_ENTRIES, MAX_UNITS
from redis_patterns._plan import Eval
from redis_patterns._validate import MAX_DURATION_MS
from redis_patterns.testing.pytest_plugin import Backend

LONGEST = MAX_DURATION_MS / 1000  # seconds: the longest window, period or refill accepted
DAY = 86400.0


def fill(client: Any, limiter: RateLimiter, key: str, hits: int) -> None:
    """``hits`` real hits of cost 1, pipelined (the same script call `hit` sends); all admitted."""
    assert limiter.hit(key).allowed  # loads the script
    effect = next(limiter._plans.hit(key, 1))
    assert isinstance(effect, Eval)
    pipe = client.pipeline(transaction=False)
    for _ in range(hits - 1):
        pipe.evalsha(effect.script.sha, len(effect.keys), *effect.keys, *effect.args)
    plans = limiter._plans
    for reply in pipe.execute():
        if isinstance(plans, core.MultiCore):
            assert int(reply[1]) == 1  # {now, all allowed, ...}
        else:
            assert plans._decision(reply).allowed


def server_seconds(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds + micros / 1e6)


def wait_until(client: Any, server_time: float) -> None:
    while (left := server_time - server_seconds(client)) > 0:
        time.sleep(left)


def slowlog(client: Any) -> list[tuple[int, bytes]]:
    """(µs, command) of every command the server logged as slower than its threshold."""
    return [(e["duration"], e["command"][:60]) for e in client.slowlog_get(1024)]


def fifteen_cheap_limits(client: Any) -> list[RateLimiter]:
    """Every O(1) kind at its largest limit and longest duration, 15 limits in all."""
    made: list[RateLimiter] = []
    for i in range(3):
        made += [
            FixedWindow(client, MAX_UNITS, LONGEST, name=f"fw{i}"),
            SlidingWindow(client, MAX_UNITS, LONGEST, name=f"sw{i}"),
            TokenBucket(client, MAX_UNITS, MAX_UNITS / LONGEST, name=f"tb{i}"),
            GCRA(client, MAX_UNITS, LONGEST, name=f"gcra{i}"),
            GCRA(client, 10**6, 1.0, burst=MAX_UNITS, name=f"gb{i}"),  # drains in LONGEST
        ]
    return made


@pytest.mark.slow
@pytest.mark.parametrize("binary", [None, "redis7"], ids=["valkey", "redis7"])
def test_largest_inputs_of_every_limiter_stay_out_of_the_slowlog(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    server = server_factory(
        binary,
        config={
            "slowlog-log-slower-than": 10_000,  # µs
            "slowlog-max-len": 1024,
            "enable-debug-command": "local",
        },
    )
    # SLOWLOG measures wall time: on a loaded machine another process may preempt the server
    # inside any command. A higher priority for the test's own server makes that rarer.
    assert server.pid is not None
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, server.pid, -10)
    client = server.client()
    # the server deletes no expired key on its own: the scripts meet them, and must free them
    client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    short = 5.0  # seconds: a window whose hits the test can outlive
    log = SlidingLog(client, MAX_LOG_ENTRIES, LONGEST)
    short_log = SlidingLog(client, MAX_LOG_ENTRIES, short, name="short")
    cheap = fifteen_cheap_limits(client)
    assert len(cheap) + 1 == MAX_LIMITS
    half = MAX_LOG_ENTRIES // 2
    logs = [SlidingLog(client, half, short, name="a"), SlidingLog(client, half, short, name="b")]
    multi = MultiLimit([*cheap[:14], *logs])
    assert len(multi._cores) == MAX_LIMITS

    # The most prior hits each can hold: one sorted-set member per hit, 5,000 in all (the
    # MultiLimit's sliding logs are filled through limiters with the same keys: quicker). The
    # "trimmed" keys get one hit less, added later to keep them alive while the rest expire.
    fill(client, log, "full", MAX_LOG_ENTRIES)
    for key, hits in (("expired", half), ("trimmed", half - 1)):
        for each in logs:
            fill(client, each, key, hits)
    fill(client, short_log, "expired", MAX_LOG_ENTRIES)
    fill(client, short_log, "trimmed", MAX_LOG_ENTRIES - 1)
    filled = server_seconds(client)
    client.slowlog_reset()

    decisions: list[Decision] = []
    for limiter in cheap:
        decisions += [limiter.hit("big", MAX_UNITS), limiter.hit("big", MAX_UNITS)]
        decisions += [limiter.hit("big"), limiter.peek("big")]
    decisions += [log.hit("full", MAX_LOG_ENTRIES), log.hit("full"), log.peek("full")]
    decisions += [log.hit("fresh", MAX_LOG_ENTRIES), log.hit("fresh", MAX_LOG_ENTRIES)]
    decisions += [multi.hit("trimmed", half), multi.peek("trimmed"), multi.peek("fresh")]
    decisions += [multi.hit("fresh", half), multi.hit("fresh", half)]
    assert slowlog(client) == []
    wait_until(client, filled + 1.0)
    assert short_log.hit("trimmed").allowed
    assert multi.hit("trimmed").allowed
    assert client.zcard(short_log.keys("trimmed")[0]) == MAX_LOG_ENTRIES  # none expired yet
    assert [client.zcard(k) for k in multi.keys("trimmed")[14:]] == [half, half]
    wait_until(client, filled + short + 0.2)
    # trims the 4,999 expired members of a key, or meets an expired key holding 5,000
    assert short_log.hit("trimmed").allowed
    assert client.zcard(short_log.keys("trimmed")[0]) == 2
    assert multi.hit("trimmed").allowed
    assert [client.zcard(k) for k in multi.keys("trimmed")[14:]] == [2, 2]
    expired_before = client.info("stats")["expired_keys"]
    assert short_log.hit("expired").allowed
    assert client.info("stats")["expired_keys"] == expired_before + 1  # freed by the script
    assert multi.hit("expired").allowed
    assert [client.zcard(k) for k in multi.keys("expired")[14:]] == [1, 1]

    assert slowlog(client) == []
    assert all(d.retry_after >= 0 and d.reset_after >= 0 and d.remaining >= 0 for d in decisions)
    client.close()


@pytest.mark.parametrize("cost", [1, 1_500])
def test_sliding_log_memory_grows_with_hits_not_with_cost(
    backend: Backend, prefix: str, cost: int
) -> None:
    client = backend.client()
    limiter = SlidingLog(client, MAX_LOG_ENTRIES, DAY)
    key = f"{prefix}:u"
    for _ in range(3):
        assert limiter.hit(key, cost).allowed
    (state,) = limiter.keys(key)
    assert client.zcard(state) == 3
    usage = client.memory_usage(state)
    assert usage is not None
    assert usage < 512  # a few hits' bytes, not 4,500 entries
    assert limiter.peek(key).remaining == MAX_LOG_ENTRIES - 3 * cost
    assert not limiter.hit(key, MAX_LOG_ENTRIES - 3 * cost + 1).allowed


# --- durations at the bound ---------------------------------------------------------------

AT_THE_BOUND: dict[str, Callable[[Any], RateLimiter]] = {
    "fixed": lambda c: FixedWindow(c, 3, LONGEST),
    "log": lambda c: SlidingLog(c, 3, LONGEST),
    "sliding": lambda c: SlidingWindow(c, 3, LONGEST),
    "bucket": lambda c: TokenBucket(c, 3, 3 / LONGEST),  # refills in the longest time
    "gcra": lambda c: GCRA(c, 3, LONGEST),
    "gcra-burst": lambda c: GCRA(c, 1, LONGEST / 3, burst=3),  # drains in the longest time
    "multi": lambda c: MultiLimit([FixedWindow(c, 3, LONGEST), GCRA(c, 3, LONGEST)]),
}


@pytest.mark.parametrize("kind", list(AT_THE_BOUND))
def test_the_longest_durations_give_correct_decisions(
    backend: Backend, prefix: str, kind: str
) -> None:
    client = backend.client()
    limiter = AT_THE_BOUND[kind](client)
    key = f"{prefix}:u"
    horizon = 2 * LONGEST  # the sliding window counter resets after two windows
    assert limiter.peek(key) == Decision(True, 3, 3, 0.0, 0.0)
    burst = limiter.hit(key, 3)  # a fresh full burst
    assert burst.allowed
    assert burst.remaining == 0
    assert 0 < burst.reset_after <= horizon
    for refused in (limiter.hit(key), limiter.peek(key)):
        assert not refused.allowed
        assert refused.remaining == 0
        assert 0 < refused.retry_after <= LONGEST
        assert 0 < refused.reset_after <= horizon
    for state in limiter.keys(key):
        assert 0 < client.pttl(state) <= horizon * 1000


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_the_largest_counts_are_exact(backend: Backend, prefix: str, kind: str) -> None:
    """Counts near 10^15 come back to the unit (a bucket or GCRA that large refills too fast
    for a test to count: at least 10^15 units per 10^9 s)."""
    client = backend.client()
    make = FixedWindow if kind == "fixed" else SlidingWindow
    limiter = make(client, MAX_UNITS, LONGEST)
    key = f"{prefix}:u"
    first = limiter.hit(key, MAX_UNITS - 2)
    assert (first.allowed, first.limit, first.remaining) == (True, MAX_UNITS, 2)
    assert limiter.hit(key).remaining == 1
    assert not limiter.hit(key, 2).allowed
    assert limiter.hit(key).remaining == 0
    assert not limiter.hit(key).allowed


ONE_TOO_MANY: list[tuple[str, Callable[[Any], object]]] = [
    ("window", lambda c: FixedWindow(c, 3, LONGEST + 0.001)),
    ("window timedelta", lambda c: SlidingLog(c, 3, timedelta(milliseconds=MAX_DURATION_MS + 1))),
    ("window int", lambda c: SlidingWindow(c, 3, MAX_DURATION_MS // 1000 + 1)),
    ("period", lambda c: GCRA(c, 3, LONGEST + 0.001)),
    ("drain", lambda c: GCRA(c, 1, LONGEST / 3, burst=4)),
    ("refill", lambda c: TokenBucket(c, 3, 3 / LONGEST * 0.999)),
    ("limit", lambda c: FixedWindow(c, MAX_UNITS + 1, 1)),
    ("sliding limit", lambda c: SlidingWindow(c, MAX_UNITS + 1, 1)),
    ("capacity", lambda c: TokenBucket(c, MAX_UNITS + 1, 1e9)),
    ("gcra limit", lambda c: GCRA(c, MAX_UNITS + 1, 1)),
    ("burst", lambda c: GCRA(c, 1, 1, burst=MAX_UNITS + 1)),
    ("log limit", lambda c: SlidingLog(c, MAX_LOG_ENTRIES + 1, 1)),
    (
        "log entries",
        lambda c: MultiLimit([SlidingLog(c, 5_000, 1), SlidingLog(c, 5_001, 2)]),
    ),
    (
        "limits",
        lambda c: MultiLimit([FixedWindow(c, 1, 1, name=str(i)) for i in range(MAX_LIMITS + 1)]),
    ),
]


@pytest.mark.parametrize("make", [m for _, m in ONE_TOO_MANY], ids=[i for i, _ in ONE_TOO_MANY])
def test_one_more_than_the_largest_is_refused_before_io(backend: Backend, make: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError, match=r"at most|more than"):
        make(client)
    assert seen.count == 0
