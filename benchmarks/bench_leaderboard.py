"""Leaderboard at 1,000,000 members: add_many throughput, and rank / around / top(10) latency.

Registered with the harness (``make bench``) and runnable alone for the add_many numbers:
``python benchmarks/bench_leaderboard.py [--members N] [--url URL]``. Not run by pytest.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from redis_patterns import EmbeddedServer, Leaderboard
from redis_patterns.cli.bench import Operation, benchmark

MEMBERS = 1_000_000
CHUNK = 10_000
_loaded: dict[int, Leaderboard] = {}


def load(client: Any, name: str, members: int, *, quiet: bool = True) -> tuple[Leaderboard, float]:
    """A board of ``members`` random scores, loaded with add_many; returns it and members/s."""
    board = Leaderboard(client, name)
    board.clear()
    rng = random.Random(1)
    started = time.perf_counter()
    for offset in range(0, members, CHUNK):
        upto = min(members, offset + CHUNK)
        board.add_many({f"player{i}": rng.randint(0, 10_000_000) for i in range(offset, upto)})
        if not quiet:
            print(f"\r  loading {upto:,}/{members:,}", end="", file=sys.stderr, flush=True)
    rate = members / (time.perf_counter() - started)
    if not quiet:
        print(file=sys.stderr)
    return board, rate


def _board(client: redis.Redis) -> Leaderboard:
    key = id(client)
    if key not in _loaded:
        _loaded[key], _ = load(client, "bench-leaderboard-1m", MEMBERS)
    return _loaded[key]


def _member(i: int) -> str:
    return f"player{(i * 7919) % MEMBERS}"


def _cycling(call: Callable[[str], object]) -> Operation:
    counter = iter(range(10**12))
    return lambda: call(_member(next(counter)))


@benchmark("Leaderboard.rank @1M")
def _bench_rank(client: redis.Redis, prefix: str) -> Operation:
    return _cycling(_board(client).rank)


@benchmark("Leaderboard.rank competition @1M")
def _bench_rank_competition(client: redis.Redis, prefix: str) -> Operation:
    board = Leaderboard(client, "bench-leaderboard-1m", ties="competition")
    _board(client)
    return _cycling(board.rank)


@benchmark("Leaderboard.around(5) @1M")
def _bench_around(client: redis.Redis, prefix: str) -> Operation:
    board = _board(client)
    return _cycling(lambda m: board.around(m, 5))


@benchmark("Leaderboard.top(10) @1M")
def _bench_top(client: redis.Redis, prefix: str) -> Operation:
    board = _board(client)
    return lambda: board.top(10)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_leaderboard")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--url", default=None)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args(argv)
    server = None
    if args.url is None:
        server = EmbeddedServer().start()
    client: Any = redis.Redis.from_url(args.url or server.url)  # type: ignore[union-attr]
    try:
        board, rate = load(client, "bench-leaderboard-alone", args.members, quiet=False)
        print(f"add_many: {args.members:,} members at {rate:,.0f} members/s")
        rng = random.Random(2)
        members = [f"player{rng.randrange(args.members)}" for _ in range(args.samples)]
        fair = Leaderboard(client, "bench-leaderboard-alone", ties="competition")
        ops: dict[str, Callable[[str], object]] = {
            "rank": board.rank,
            "rank (competition)": fair.rank,
            "around(5)": lambda m: board.around(m, 5),
            "top(10)": lambda m: board.top(10),
            "page(500, 20)": lambda m: board.page(500, 20),
        }
        for name, op in ops.items():
            op(members[0])
            timings = []
            for member in members:
                started = time.perf_counter()
                op(member)
                timings.append((time.perf_counter() - started) * 1e6)
            timings.sort()
            p99 = timings[int(len(timings) * 0.99)]
            print(f"{name:20} median {statistics.median(timings):6.1f} µs   p99 {p99:6.1f} µs")
        board.clear()
    finally:
        client.close()
        if server is not None:
            server.stop()
            server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
