"""Rate limiting basics: hit, peek, enforce, with each algorithm (runs on an embedded server)."""

from __future__ import annotations

import redis_patterns as rp


def main() -> None:
    client = rp.connect()  # $REDIS_URL, or an embedded server started on demand
    limiters: list[rp.RateLimiter] = [
        rp.FixedWindow(client, limit=5, window=3600),  # 5 per clock hour
        rp.SlidingLog(client, limit=5, window=3600),  # exactly 5 in any 3600 s
        rp.SlidingWindow(client, limit=5, window=3600),  # about 5 per 3600 s, O(1) memory
        rp.TokenBucket(client, capacity=5, refill_rate=0.5),  # bursts of 5, then 1 per 2 s
        rp.GCRA(client, limit=5, period=60, burst=5),  # 1 every 12 s, bursts of 5
    ]
    for limiter in limiters:
        limiter.reset("user:42")
        decisions = [limiter.hit("user:42") for _ in range(6)]
        admitted = sum(d.allowed for d in decisions)
        last = decisions[-1]
        print(
            f"{type(limiter).__name__:14} admitted {admitted} of 6; "
            f"refused one may retry after {last.retry_after:.1f} s"
        )
        assert admitted == 5
        assert not last.allowed
        assert limiter.peek("user:42").remaining == 0  # peek consumes nothing

    bucket = rp.TokenBucket(client, capacity=10, refill_rate=1)
    bucket.reset("report:export")
    bucket.enforce("report:export", cost=8)  # expensive calls cost more
    try:
        bucket.enforce("report:export", cost=5)
        raise AssertionError("the second export should have been refused")
    except rp.RateLimitedError as exc:
        print(f"export refused: retry after {exc.retry_after:.1f} s")
    client.close()


if __name__ == "__main__":
    main()
