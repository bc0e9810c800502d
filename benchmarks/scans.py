"""Cost by size: server and client µs per operation as the value, the board or the cost grows.

Goal 4 of issue 16 ("cost grows no faster than the work"): Cache.get/set and SessionStore.get/
update by value size, Leaderboard rank/around/top by members, each limiter by the cost of one
hit, with raw commands of the same size as floors. Each cell runs as many calls as fit in a time
budget (at least one), in ``scan_rounds`` interleaved rounds; server µs is the commandstats
``usec`` of the top-level commands (see `benchmarks.harness`), client µs the process CPU time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_patterns
from benchmarks import bench_leaderboard, bench_ratelimit
from benchmarks.harness import Env, Rounds, Sample, ServerStats, WriteMeter, _sample
from redis_patterns.testing.counter import CommandCounter

Op = Callable[[], object]
SLOW = 2.0  # seconds: a cell whose first call takes longer is measured in one round only


@dataclass
class Cell:
    server_us: float
    server_cpu_us: float
    client_us: float
    calls: int


@dataclass
class ScanRow:
    name: str
    kind: str
    cells: dict[str, Cell] = field(default_factory=dict)
    commands: str = ""
    status: str = "ok"


@dataclass
class Scan:
    key: str
    title: str
    parameter: str  # the column heading, e.g. "value size"
    columns: list[str]
    rows: list[ScanRow]
    note: str = ""


@dataclass
class ScanOp:
    """``prepare(param)`` -> (op, cleanup): op is called repeatedly; cleanup runs outside the
    timed window (e.g. deleting the keys a cost scan filled)."""

    name: str
    kind: str
    prepare: Callable[[Any], tuple[Op, Callable[[], object]]]


class NotApplicable(Exception):
    """Raised by ``prepare(param)`` when the operation refuses ``param`` (e.g. a cost above a
    limiter's limit): that cell stays empty and the row goes on."""


def _label(n: int) -> str:
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _bytes_label(n: int) -> str:
    for unit, size in (("MB", 10**6), ("KB", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def _probe(env: Env, op: Op) -> Sample:
    meter = WriteMeter()
    with CommandCounter([(env.host, env.port)]) as seen, meter.active():
        op()
    return _sample(seen, meter, 1)


def run_scan(
    env: Env,
    stats: ServerStats,
    key: str,
    title: str,
    parameter: str,
    params: list[tuple[str, Any]],
    ops: list[ScanOp],
    note: str = "",
) -> Scan:
    settings = env.settings
    rows = [ScanRow(op.name, op.kind) for op in ops]
    samples: dict[int, Sample] = {}
    for label, param in params:
        prepared: dict[str, tuple[int, Op, Callable[[], object]]] = {}
        for index, scan_op in enumerate(ops):
            if rows[index].status != "ok":
                continue
            try:
                op, cleanup = scan_op.prepare(param)
            except NotApplicable:
                continue
            try:
                if index not in samples:  # commands at the smallest parameter, one call
                    op()  # warm-up: scripts loaded, connections open
                    samples[index] = _probe(env, op)
                    rows[index].commands = samples[index].names
                    cleanup()
                prepared[f"{index}|{label}"] = (index, op, cleanup)
            except Exception as exc:
                rows[index].status = f"error: {type(exc).__name__}: {exc}"[:160]
        by_name = {name: samples[index] for name, (index, _, _) in prepared.items()}
        rounds = Rounds(list(prepared), settings.scan_rounds, stats, by_name)
        for name in rounds:
            index, op, cleanup = prepared[name]
            tally = rounds.tallies[name]
            if rows[index].status != "ok" or (tally.wall and tally.wall[0] > SLOW):
                continue  # one call of seconds says enough; the rounds would take minutes
            try:
                with rounds.window(name, 1):
                    op()
                # as many more calls as fit in the budget, judged by the first one
                more = min(
                    299, int(settings.scan_budget / max(rounds.tallies[name].wall[-1], 1e-6))
                )
                if more > 0:
                    with rounds.window(name, more):
                        for _ in range(more):
                            op()
                cleanup()
            except Exception as exc:
                rows[index].status = f"error: {type(exc).__name__}: {exc}"[:160]
        for name, tally in rounds.tallies.items():
            index = prepared[name][0]
            if tally.ops and rows[index].status == "ok":
                idle = tally.windows * stats.info_cpu
                rows[index].cells[label] = Cell(
                    server_us=tally.server_usec / tally.ops,
                    server_cpu_us=max(0.0, tally.server_cpu - idle) / tally.ops * 1e6,
                    client_us=tally.cpu / tally.ops * 1e6,
                    calls=tally.ops,
                )
    return Scan(key, title, parameter, [label for label, _ in params], rows, note)


# --- the scans --------------------------------------------------------------------------------


def _payload(size: int) -> dict[str, str]:
    """A JSON document of ``size`` bytes: {"v":"xxx..."}."""
    return {"v": "x" * max(0, size - 8)}


def _no_cleanup() -> None:
    return None


def cache_scan(env: Env, stats: ServerStats) -> Scan:
    client = env.client()
    cache = redis_patterns.Cache(client, env.name("scan"), 600)
    raw_key = env.name("raw")

    def raw_get(size: int) -> tuple[Op, Callable[[], object]]:
        client.set(raw_key, orjson.dumps(_payload(size)))
        return (lambda: client.get(raw_key)), _no_cleanup

    def raw_set(size: int) -> tuple[Op, Callable[[], object]]:
        data = orjson.dumps(_payload(size))
        return (lambda: client.set(raw_key, data, ex=600)), _no_cleanup

    def get(size: int) -> tuple[Op, Callable[[], object]]:
        cache.set("k", _payload(size))
        return (lambda: cache.get("k")), _no_cleanup

    def set_(size: int) -> tuple[Op, Callable[[], object]]:
        value = _payload(size)
        return (lambda: cache.set("k", value)), _no_cleanup

    sizes = [(_bytes_label(s), s) for s in env.settings.sizes]
    return run_scan(
        env,
        stats,
        "cache-size",
        "Cache by value size",
        "JSON value size",
        sizes,
        [
            ScanOp("redis-py GET (floor)", "floor", raw_get),
            ScanOp("redis-py SET EX (floor)", "floor", raw_set),
            ScanOp("Cache.get (hit)", "ours", get),
            ScanOp("Cache.set", "ours", set_),
        ],
        note="The floors GET and SET the same serialized bytes as one string key",
    )


def session_scan(env: Env, stats: ServerStats) -> Scan:
    store = redis_patterns.SessionStore(env.client(), namespace=env.name("scan"), idle_ttl=1800)
    base = {"user_id": 42, "email": "alice@example.com", "role": "admin"}

    def session(size: int) -> str:
        return store.create(base | {"blob": "x" * max(0, size - 2)}).id

    def get(size: int) -> tuple[Op, Callable[[], object]]:
        sid = session(size)
        return (lambda: store.get(sid)), _no_cleanup

    def update(size: int) -> tuple[Op, Callable[[], object]]:
        sid = session(size)
        change = {"blob": "y" * max(0, size - 2)}
        return (lambda: store.update(sid, change)), _no_cleanup

    sizes = [(_bytes_label(s), s) for s in env.settings.sizes]
    return run_scan(
        env,
        stats,
        "session-size",
        "SessionStore by field size",
        "size of one field (JSON)",
        sizes,
        [ScanOp("SessionStore.get", "ours", get), ScanOp("SessionStore.update", "ours", update)],
        note="A session of 3 small fields and one of the given size; update rewrites that one",
    )


def leaderboard_scan(env: Env, stats: ServerStats) -> Scan:
    client = env.client()
    boards: dict[int, redis_patterns.Leaderboard] = {}

    def board(members: int) -> redis_patterns.Leaderboard:
        if members not in boards:
            for old in boards.values():
                old.clear()
            boards.clear()
            boards[members], _ = bench_leaderboard.load(client, env.name("board"), members)
        return boards[members]

    def cycling(members: int) -> Iterator[str]:
        return (f"player{(i * 7919) % members}" for i in itertools.count())

    def rank(members: int) -> tuple[Op, Callable[[], object]]:
        b, names = board(members), cycling(members)
        return (lambda: b.rank(next(names))), _no_cleanup

    def raw_rank(members: int) -> tuple[Op, Callable[[], object]]:
        b, names = board(members), cycling(members)
        return (lambda: client.zrevrank(b.key, next(names))), _no_cleanup

    def around(members: int) -> tuple[Op, Callable[[], object]]:
        b, names = board(members), cycling(members)
        return (lambda: b.around(next(names), 5)), _no_cleanup

    def top(members: int) -> tuple[Op, Callable[[], object]]:
        b = board(members)
        return (lambda: b.top(10)), _no_cleanup

    members = [(_label(m), m) for m in env.settings.members]
    scan = run_scan(
        env,
        stats,
        "leaderboard-members",
        "Leaderboard by members",
        "members",
        members,
        [
            ScanOp("redis-py ZREVRANK (floor)", "floor", raw_rank),
            ScanOp("Leaderboard.rank", "ours", rank),
            ScanOp("Leaderboard.around(5)", "ours", around),
            ScanOp("Leaderboard.top(10)", "ours", top),
        ],
        note="Random scores; the member asked for changes every call",
    )
    for b in boards.values():
        b.clear()
    return scan


def limiter_scan(env: Env, stats: ServerStats) -> Scan:
    # No socket timeout and no retry: a slow hit must be measured, never sent twice.
    client = env.client(socket_timeout=None, retry=Retry(NoBackoff(), 0))
    limit = 10**12  # no cost reaches it: every hit is admitted and writes its cost

    def prepare(name: str) -> Callable[[int], tuple[Op, Callable[[], object]]]:
        limiter = bench_ratelimit.make_ours(client, name, limit, 86400)

        def at(cost: int) -> tuple[Op, Callable[[], object]]:
            if cost > limiter.limit:  # a SlidingLog's limit is at most 5,000
                raise NotApplicable
            # a fresh key per call, all admitted
            used: list[bytes] = []
            names = (env.name(f"{name}-{cost}-{i}") for i in itertools.count())

            def op() -> object:
                key = next(names)
                used.extend(limiter.keys(key))
                return limiter.hit(key, cost)

            def cleanup() -> None:
                if used:
                    client.unlink(*used)
                    used.clear()

            return op, cleanup

        return at

    costs = [(_label(c), c) for c in env.settings.costs]
    return run_scan(
        env,
        stats,
        "limiter-cost",
        "Rate limiters by the cost of one hit",
        "cost",
        costs,
        [
            ScanOp(name.removeprefix("redis-patterns "), "ours", prepare(name))
            for name in bench_ratelimit.OURS
        ],
        note=(
            "Each hit on a new key, all admitted (limit 10^12; SlidingLog's at most 5,000, so "
            "no larger cost); keys unlinked between windows"
        ),
    )


SCANS: dict[str, Callable[[Env, ServerStats], Scan]] = {
    "cache-size": cache_scan,
    "session-size": session_scan,
    "leaderboard-members": leaderboard_scan,
    "limiter-cost": limiter_scan,
}
