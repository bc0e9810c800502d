"""A separate process for the cache tests: runs get_or_load on one key and prints the value.

argv: kind (standalone|cluster), port, namespace, key, loader_seconds, counter_key, go_key, lock_ttl
The loader increments ``counter_key`` (so the test counts loader calls across processes) and
sleeps. The worker waits (bounded) until ``go_key`` exists, so all workers start together.
"""

from __future__ import annotations

import sys
import time

import redis
import redis.cluster

from redis_patterns import Cache


def main() -> int:
    kind, port, namespace, key, seconds, counter_key, go_key, lock_ttl = sys.argv[1:9]
    client: redis.Redis | redis.cluster.RedisCluster
    if kind == "cluster":
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=int(port))
    else:
        client = redis.Redis(host="127.0.0.1", port=int(port))
    cache = Cache(client, namespace, 60, lock_ttl=float(lock_ttl))

    def loader() -> str:
        client.incr(counter_key)
        time.sleep(float(seconds))
        return f"loaded-by-{port}"

    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not client.exists(go_key):
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    value = cache.get_or_load(key, loader)
    print(f"value {value}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
