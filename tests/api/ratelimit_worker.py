"""A separate process hitting a limiter: ``python ratelimit_worker.py SPEC_JSON``, prints JSON.

Used by the multi-process exactness test and by the clock-jump test (run under libfaketime).
SPEC: url, cluster (bool), kind, args (list), key, hits, threads.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import redis
import redis.cluster

import redis_patterns


def main(spec: dict[str, Any]) -> None:
    client: Any
    if spec["cluster"]:
        client = redis.cluster.RedisCluster.from_url(spec["url"])
    else:
        client = redis.Redis.from_url(spec["url"])
    limiter = getattr(redis_patterns, spec["kind"])(client, *spec["args"])
    results: list[list[Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(spec["threads"])

    def work() -> None:
        barrier.wait()
        for _ in range(spec["hits"]):
            decision = limiter.hit(spec["key"])
            with lock:
                results.append([decision.allowed, decision.remaining, decision.retry_after])

    threads = [threading.Thread(target=work) for _ in range(spec["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    print(json.dumps({"clock": time.time(), "results": results}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
