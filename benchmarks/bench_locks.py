"""Uncontended acquire+release: redis-patterns Lock vs redis-py Lock, pottery, python-redis-lock.

Also a correctness probe: 16 threads doing lock-protected, non-atomic increments.

Run: ``.venv/bin/python benchmarks/bench_locks.py [--ops N] [--server valkey|redis-server]``
(peers installed by hand: ``pip install pottery python-redis-lock``; they are not dependencies).
Every library talks to the same embedded server in one run; commands per operation are
counted exactly with MONITOR on a separate sample, not estimated. The harness
(``python -m benchmarks.run``, what ``make bench-peers`` publishes) reuses `CANDIDATES` and
`exclusion_probe` and measures more per cycle (server µs, bytes, round trips).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import redis

from redis_patterns import EmbeddedServer, Lock
from redis_patterns.testing.counter import CommandCounter

Cycle = Callable[[int], None]


def ours(client: redis.Redis) -> Cycle:
    lock = Lock(client, "bench:ours", ttl=30)

    def cycle(_: int) -> None:
        lock.acquire(blocking=False)
        lock.release()

    return cycle


def redis_py(client: redis.Redis) -> Cycle:
    lock = client.lock("bench:redis-py", timeout=30)

    def cycle(_: int) -> None:
        lock.acquire(blocking=False)
        lock.release()

    return cycle


def pottery_redlock(client: redis.Redis) -> Cycle:
    from pottery import Redlock

    lock = Redlock(key="bench:pottery", masters={client}, auto_release_time=30)

    def cycle(_: int) -> None:
        lock.acquire(blocking=False)
        lock.release()

    return cycle


def python_redis_lock(client: redis.Redis) -> Cycle:
    import redis_lock

    lock = redis_lock.Lock(client, "bench:python-redis-lock", expire=30)

    def cycle(_: int) -> None:
        lock.acquire(blocking=False)
        lock.release()

    return cycle


CANDIDATES: dict[str, Callable[[redis.Redis], Cycle]] = {
    "redis-patterns Lock": ours,
    "redis-py Lock": redis_py,
    "pottery Redlock (1 node)": pottery_redlock,
    "python-redis-lock": python_redis_lock,
}


def _factories() -> dict[str, Callable[[redis.Redis, str], Any]]:
    """A new lock object per thread, for the mutual-exclusion probe."""

    def pottery(client: redis.Redis, name: str) -> Any:
        from pottery import Redlock

        return Redlock(key=name, masters={client}, auto_release_time=30)

    def python_redis(client: redis.Redis, name: str) -> Any:
        import redis_lock

        return redis_lock.Lock(client, name, expire=30)

    return {
        "redis-patterns Lock": lambda client, name: Lock(client, name, ttl=30),
        "redis-py Lock": lambda client, name: client.lock(name, timeout=30),
        "pottery Redlock (1 node)": pottery,
        "python-redis-lock": python_redis,
    }


def exclusion_probe(
    server: EmbeddedServer, make: Callable[[redis.Redis, str], Any], threads: int, each: int
) -> str:
    """Threads increment a counter with a racy GET then SET, each inside the lock: the final
    value equals the number of increments only if no two holders ever overlapped."""
    counter = f"bench:probe:{uuid.uuid4().hex}"
    name = counter + ":lock"

    def work() -> None:
        client = server.client()
        for _ in range(each):
            lock = make(client, name)
            lock.acquire(blocking=True)
            value = int(client.get(counter) or 0)
            client.set(counter, value + 1)
            lock.release()
        client.close()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    check = server.client()
    final = int(check.get(counter) or 0)
    check.close()
    return f"{final} / {threads * each}"


def count_commands(server: EmbeddedServer, make: Callable[[redis.Redis], Cycle]) -> list[str]:
    client = server.client()
    cycle = make(client)
    for i in range(50):  # warm-up: scripts cached, connections open
        cycle(i)
    with CommandCounter([("127.0.0.1", server.port or 0)]) as seen:
        for i in range(20):
            cycle(i)
    client.close()
    return [f"{seen.count / 20:g}", " ".join(sorted(set(seen.names)))]


def rate(client: redis.Redis, cycle: Cycle, ops: int) -> float:
    started = time.perf_counter()
    for i in range(ops):
        cycle(i)
    return ops / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", default="valkey", help="valkey (embedded) or redis-server")
    parser.add_argument("--threads", type=int, default=16, help="threads in the exclusion probe")
    parser.add_argument("--each", type=int, default=25, help="increments per probe thread")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pottery warns about a single master; that is the point
    with EmbeddedServer(args.server) as server:
        version = server.client().info("server")
        label = f"{args.server} {version.get('valkey_version') or version['redis_version']}"
        print(
            f"uncontended acquire+release, {args.rounds} interleaved rounds of {args.ops} ops "
            f"(median), {label}\n"
        )
        print("| library | ops/s | commands/op | commands |")
        print("|---|---:|---:|---|")
        cycles: dict[str, tuple[redis.Redis, Cycle]] = {}
        counts: dict[str, list[str]] = {}
        for name, make in CANDIDATES.items():
            try:
                counts[name] = count_commands(server, make)
                client = server.client()
                cycles[name] = (client, make(client))
            except ImportError as exc:
                counts[name] = ["-", f"not installed: {exc}"]
        # Interleaved rounds, median per library: a shared, noisy machine hits all alike.
        rates: dict[str, list[float]] = {name: [] for name in cycles}
        for _ in range(args.rounds):
            for name, (client, cycle) in cycles.items():
                rates[name].append(rate(client, cycle, args.ops))
        for name in CANDIDATES:
            ops_s = f"{statistics.median(rates[name]):,.0f}" if rates.get(name) else "-"
            print(f"| {name} | {ops_s} | " + " | ".join(counts[name]) + " |", flush=True)
        print(
            f"\nmutual exclusion probe: {args.threads} threads x {args.each} lock-protected "
            "GET-then-SET increments (final value / increments; equal means no overlap)\n"
        )
        print("| library | final / expected |")
        print("|---|---:|")
        for name, make_lock in _factories().items():
            try:
                result = exclusion_probe(server, make_lock, args.threads, args.each)
            except ImportError as exc:
                result = f"not installed: {exc}"
            print(f"| {name} | {result} |", flush=True)
        for client, _ in cycles.values():
            client.close()


if __name__ == "__main__":
    main()
