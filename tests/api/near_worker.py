"""Process B of the near-cache test: serves "k" from its near cache until an invalidation.

argv: kind port namespace. Prints "ready" once "k" is served locally, then polls (bounded) and
prints "changed <monotonic time> <violations>" when the value changes; a violation is an old
value served after this process had already received the invalidation.
"""

from __future__ import annotations

import sys
import time

import redis
import redis.cluster

from redis_patterns import Cache


def main() -> int:
    kind, port, namespace = sys.argv[1:4]
    client: redis.Redis | redis.cluster.RedisCluster
    if kind == "cluster":
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=int(port))
    else:
        client = redis.Redis(host="127.0.0.1", port=int(port))
    cache = Cache(client, namespace, 60, local=100)
    cache.get("k")
    deadline = time.monotonic() + 30
    while not cache.local_ready and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cache.get("k") == "old"
    hits = cache.stats["near_hits"]
    assert cache.get("k") == "old"
    assert cache.stats["near_hits"] == hits + 1  # served locally
    print("ready", flush=True)
    violations = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        arrived = cache.stats["invalidations"] > 0
        value = cache.get("k")
        if value != "old":
            print(f"changed {time.monotonic()} {violations}", flush=True)
            cache.close()
            return 0
        if arrived:
            violations += 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
