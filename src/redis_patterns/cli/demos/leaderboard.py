"""Demo: the seed's five players, pages and neighbourhoods, ties, then a 100,000-member board."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from ..._sync.leaderboard import Leaderboard
from ..demo import DemoContext, section

BIG = 100_000
CHUNK = 10_000
SAMPLES = 300


def _latency_us(call: Callable[[], object]) -> float:
    timings = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1e6)
    return statistics.median(timings)


@section("leaderboard", "Leaderboard: ranks, pages, neighbourhoods, fair ties", order=50)
def demo_leaderboard(ctx: DemoContext) -> bool:
    client = ctx.client()
    ok = True
    board = Leaderboard(client, ctx.key("seed"))
    board.add_many({"alice": 1500, "bob": 2300, "charlie": 1800, "diana": 3100, "eve": 2750})
    top = board.top(5)
    ctx.say("top 5: " + ", ".join(f"#{e.rank} {e.member} {e.score:g}" for e in top))
    ok &= [e.member for e in top] == ["diana", "eve", "bob", "charlie", "alice"]
    ctx.say(f"bob: rank {board.rank('bob')} (1-based), score {board.score('bob'):g}")
    ok &= board.rank("bob") == 3
    alice = board.incr("alice", 200)
    refused = not board.add("alice", 1000, only="higher")
    ctx.say(f"alice +200 -> {alice:g}; add(1000, only='higher') refused: {refused}")
    ok &= alice == 1700 and refused
    page = board.page(2, 2)
    ctx.say(
        f"page 2 of {page.pages} (size 2, {page.total} players): "
        + ", ".join(f"#{e.rank} {e.member}" for e in page.entries)
    )
    ok &= [e.rank for e in page.entries] == [3, 4]

    fair = Leaderboard(client, ctx.key("ties"), ties="competition")
    fair.add_many({"ann": 90, "ben": 80, "cat": 80, "dan": 70})
    ordinal = Leaderboard(client, ctx.key("ties"))
    ctx.say(
        "ties, competition: "
        + ", ".join(f"#{e.rank} {e.member}" for e in fair.top(4))
        + " | ordinal: "
        + ", ".join(f"#{e.rank} {e.member}" for e in ordinal.top(4))
    )
    ok &= [e.rank for e in fair.top(4)] == [1, 2, 2, 4]

    big = Leaderboard(client, ctx.key("big"))
    rng = random.Random(7)
    advance = ctx.progress(BIG, f"loading {BIG:,} players with add_many")
    started = time.perf_counter()
    for offset in range(0, BIG, CHUNK):
        chunk = range(offset, offset + CHUNK)
        big.add_many({f"player{i}": rng.randint(0, 1_000_000) for i in chunk})
        advance(CHUNK)
    load = time.perf_counter() - started
    count = big.count()
    ctx.say(f"loaded {count:,} players with add_many in {load:.2f}s ({count / load:,.0f}/s)")
    ok &= count == BIG
    me = "player4242"
    around = big.around(me, 5)
    mine = next(e for e in around if e.member == me)
    ctx.say(
        f"{me}: rank {mine.rank:,}; neighbourhood #{around[0].rank:,}..#{around[-1].rank:,} "
        f"({len(around)} entries, one script)"
    )
    ok &= len(around) == 11 and mine.rank == big.rank(me)
    rank_us = _latency_us(lambda: big.rank(me))
    around_us = _latency_us(lambda: big.around(me, 5))
    top_us = _latency_us(lambda: big.top(10))
    ctx.say(
        f"median latency at {count:,} members over {SAMPLES} calls: rank {rank_us:.0f} µs, "
        f"around(5) {around_us:.0f} µs, top(10) {top_us:.0f} µs"
    )
    for b in (board, fair, big):
        b.clear()
    client.close()
    return bool(ok)
