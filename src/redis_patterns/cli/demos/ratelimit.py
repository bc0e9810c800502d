"""Demo: the fixed window's boundary burst, and the seed's racy sliding window vs ours."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from ..._sync.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from ..demo import DemoContext, section

LIMIT = 10
WINDOW = 1.0
THREADS = 16
TRIES = 20
RACE_LIMIT = 100


def _server_now(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def _boundary_burst(ctx: DemoContext) -> bool:
    client = ctx.client()
    limiters: dict[str, RateLimiter] = {
        "FixedWindow": FixedWindow(client, LIMIT, WINDOW),
        "SlidingLog": SlidingLog(client, LIMIT, WINDOW),
        "SlidingWindow": SlidingWindow(client, LIMIT, WINDOW),
        "TokenBucket": TokenBucket(client, LIMIT, LIMIT / WINDOW),
        "GCRA": GCRA(client, LIMIT, WINDOW),
    }
    key = ctx.key("burst")
    # Windows are aligned on server time: send one burst 60 ms before an edge, one 60 ms after.
    now = _server_now(client)
    edge = (int(now / WINDOW) + 2) * WINDOW
    admitted = dict.fromkeys(limiters, 0)
    first = second = 0.0
    for offset in (-0.06, 0.06):
        time.sleep(max(0.0, edge + offset - _server_now(client)))
        stamp = _server_now(client)
        first, second = (stamp, second) if offset < 0 else (first, stamp)
        for name, limiter in limiters.items():
            admitted[name] += sum(limiter.hit(key).allowed for _ in range(2 * LIMIT))
    span = second - first
    total = _server_now(client) - first
    ctx.say(
        f"limit {LIMIT} per {WINDOW:.0f} s; bursts of {2 * LIMIT} hits {span * 1000:.0f} ms apart"
    )
    ctx.say("across a window edge; admitted within a window length (server time):")
    for name, count in admitted.items():
        ctx.say(f"  {name:14} admitted {count:3} in {total * 1000:.0f} ms")
    for limiter in limiters.values():
        limiter.reset(key)
    client.close()
    if total >= WINDOW:  # a very slow machine: the bursts did not fit in one window length
        ctx.say(f"(the bursts took {total:.2f} s, more than one window: nothing to compare)")
        return True
    return admitted["SlidingLog"] <= LIMIT


def _race(ctx: DemoContext) -> bool:
    naive_key, ours_key = ctx.key("naive"), ctx.key("ours")
    window_ms = 60_000
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    counts = {"naive": 0, "ours": 0}

    def naive() -> None:
        client = ctx.client()
        barrier.wait()
        for _ in range(TRIES):
            # The seed's recipe: four round trips, check-then-add.
            now = int(time.time() * 1000)
            client.zremrangebyscore(naive_key, 0, now - window_ms)
            count = client.zcount(naive_key, now - window_ms, now)
            if count < RACE_LIMIT:
                client.zadd(naive_key, {uuid.uuid4().hex: now})
                client.expire(naive_key, 60)
                with lock:
                    counts["naive"] += 1
        client.close()

    def ours() -> None:
        client = ctx.client()
        limiter = SlidingLog(client, RACE_LIMIT, window_ms / 1000)
        barrier.wait()
        for _ in range(TRIES):
            if limiter.hit(ours_key).allowed:
                with lock:
                    counts["ours"] += 1
        client.close()

    for target in (naive, ours):
        threads = [threading.Thread(target=target) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    client = ctx.client()
    stored = client.zcard(naive_key)
    ours_limiter = SlidingLog(client, RACE_LIMIT, window_ms / 1000)
    ours_limiter.reset(ours_key)
    client.delete(naive_key)
    client.close()
    ctx.say(f"limit {RACE_LIMIT} per minute, {THREADS} threads x {TRIES} hits:")
    ctx.say(
        f"  seed's sliding window (4 commands, check-then-add): admitted {counts['naive']} "
        f"(overshoot {counts['naive'] - RACE_LIMIT}), {stored} entries stored"
    )
    ctx.say(f"  SlidingLog (one script):                           admitted {counts['ours']}")
    return counts["ours"] == RACE_LIMIT


@section("ratelimit", "Rate limiting: the boundary burst, and the racy sliding window", order=20)
def demo_ratelimit(ctx: DemoContext) -> bool:
    burst_ok = _boundary_burst(ctx)
    race_ok = _race(ctx)
    return burst_ok and race_ok
