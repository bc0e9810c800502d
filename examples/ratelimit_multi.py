"""Several limits at once: 10 per minute AND 1,000 per hour, consuming from none on refusal."""

from __future__ import annotations

import redis_patterns as rp


def main() -> None:
    client = rp.connect()
    per_minute = rp.SlidingLog(client, limit=10, window=60)
    per_hour = rp.SlidingWindow(client, limit=1000, window=3600)
    limits = rp.MultiLimit([per_minute, per_hour])  # one script, one round trip per hit
    limits.reset("api-key:abc")

    decisions = [limits.hit("api-key:abc") for _ in range(15)]
    admitted = sum(d.allowed for d in decisions)
    print(f"admitted {admitted} of 15 (the per-minute limit binds)")
    print(f"the hour limit has {per_hour.peek('api-key:abc').remaining} left: refusals took none")
    assert admitted == 10
    assert per_hour.peek("api-key:abc").remaining == 990
    each = limits.hit_all("api-key:abc")
    for limit, decision in zip((per_minute, per_hour), each, strict=True):
        print(f"  {type(limit).__name__:14} allowed={decision.allowed} left={decision.remaining}")
    client.close()


if __name__ == "__main__":
    main()
