"""A separate process hitting a limiter: ``python ratelimit_worker.py SPEC_JSON``, prints JSON.

Used by the multi-process exactness test and by the clock-jump test (run under libfaketime).
SPEC: url, cluster (bool), wait (print "ready", then wait for a line on stdin), limiters
({label: [class name, args]}), key, hits, threads. Each limiter gets its own key (``key:label``);
output: {"clock": time.time(), "results": {label: [...]}}.
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
    if spec.get("wait"):  # let the caller start everyone at once
        print("ready", flush=True)
        sys.stdin.readline()
    output: dict[str, list[list[Any]]] = {}
    for label, (kind, args) in spec["limiters"].items():
        output[label] = hammer(getattr(redis_patterns, kind)(client, *args), spec, label)
    client.close()
    print(json.dumps({"clock": time.time(), "results": output}))


def hammer(limiter: Any, spec: dict[str, Any], label: str) -> list[list[Any]]:
    results: list[list[Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(spec["threads"])

    def work() -> None:
        barrier.wait()
        for _ in range(spec["hits"]):
            decision = limiter.hit(f"{spec['key']}:{label}")
            with lock:
                results.append([decision.allowed, decision.remaining, decision.retry_after])

    threads = [threading.Thread(target=work) for _ in range(spec["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
