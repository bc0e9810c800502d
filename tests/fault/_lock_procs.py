"""Processes for the lock fault tests: contention workers, and a holder driven over stdin.

Run as a script, it is a lock holder that obeys one command per line on stdin and answers one
line on stdout, so a test can SIGSTOP / SIGCONT / SIGKILL it between commands:

    acquire            -> "fence <n>"        (Lock with auto_renew=True)
    write <f> <v>      -> "ok" | "stale"     (FencedStore write with the held fence)
    waitlost           -> "lost True|False"  (waits up to 10 s for the watchdog to notice)
    release            -> "released" | "notowned"
"""

from __future__ import annotations

import sys
import time
from typing import Any

import redis
import redis.cluster

from redis_patterns import FencedStore, Lock, LockNotOwnedError, StaleFenceError

Spec = tuple[str, str, int]  # (kind, host, port); kind is "cluster" or "standalone"


def make_client(spec: Spec) -> Any:
    kind, host, port = spec
    if kind == "cluster":
        return redis.cluster.RedisCluster(host=host, port=port)
    return redis.Redis(host=host, port=port)


def contend(spec: Spec, name: str, counter_key: str, rounds: int) -> list[tuple[int, int]]:
    """``rounds`` critical sections doing a racy GET/SET increment; returns (read, fence) pairs."""
    client = make_client(spec)
    seen: list[tuple[int, int]] = []
    for _ in range(rounds):
        lock = Lock(client, name, ttl=10, timeout=120)
        with lock:
            value = int(client.get(counter_key) or 0)
            client.set(counter_key, value + 1)
            assert lock.fence is not None
            seen.append((value, lock.fence))
    client.close()
    return seen


def holder(spec: Spec, name: str, ttl: float) -> None:
    client = make_client(spec)
    store = FencedStore(client, name)
    lock: Lock | None = None
    for line in sys.stdin:
        command, *args = line.split()
        if command == "acquire":
            lock = Lock(client, name, ttl=ttl, auto_renew=True)
            assert lock.acquire(timeout=30)
            answer = f"fence {lock.fence}"
        elif command == "write":
            assert lock is not None
            assert lock.fence is not None
            try:
                store.write(lock.fence, args[0], args[1])
                answer = "ok"
            except StaleFenceError:
                answer = "stale"
        elif command == "waitlost":
            assert lock is not None
            deadline = time.monotonic() + 10
            while not lock.lost and time.monotonic() < deadline:
                time.sleep(0.005)
            answer = f"lost {lock.lost}"
        elif command == "release":
            assert lock is not None
            try:
                lock.release()
                answer = "released"
            except LockNotOwnedError:
                answer = "notowned"
        else:
            answer = f"unknown {command}"
        print(answer, flush=True)


if __name__ == "__main__":
    holder((sys.argv[1], sys.argv[2], int(sys.argv[3])), sys.argv[4], float(sys.argv[5]))
