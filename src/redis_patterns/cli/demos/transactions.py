"""Demo: the seed's check-then-act race, then 20 concurrent wallet transfers, WATCH vs Lua."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from ..._core.transaction import TransactionResult
from ..._scripting import Script
from ..._sync.transaction import transaction
from ...testing.counter import CommandCounter
from ..demo import DemoContext, section

LIMIT = 100
THREADS = 20
TRANSFERS_PER_THREAD = 25
WALLETS = 10
START = 100

INCR_BELOW = Script(
    "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if v >= tonumber(ARGV[1]) then return -1 end "
    "return redis.call('INCR', KEYS[1])",
    name="incr_below",
)
TRANSFER = Script.from_file(Path(__file__).with_name("transactions_transfer.lua"))


def _race(ctx: DemoContext) -> bool:
    a, b = ctx.client(), ctx.client()
    plain, watched, scripted = ctx.key("plain"), ctx.key("watched"), ctx.key("scripted")
    for key in (plain, watched, scripted):
        a.set(key, LIMIT - 1)

    # Plain commands, interleaved the seed's way: both read 99, both decide "below 100".
    seen_a, seen_b = int(a.get(plain) or 0), int(b.get(plain) or 0)
    if seen_a < LIMIT:
        a.incr(plain)
    if seen_b < LIMIT:
        b.incr(plain)
    plain_final = int(a.get(plain) or 0)

    # transaction(): B reads inside its WATCH, A commits in between, B's EXEC is aborted and
    # retried from WATCH with a fresh read, which now refuses.
    def body_b(pipe: Any) -> bool:
        value = int(pipe.get(watched) or 0)
        if not calls:
            calls.append(1)
            transaction(a, body_a, watched)  # A slips in between B's read and B's EXEC
        if value >= LIMIT:
            return False
        pipe.multi()
        pipe.incr(watched)
        return True

    def body_a(pipe: Any) -> bool:
        value = int(pipe.get(watched) or 0)
        if value >= LIMIT:
            return False
        pipe.multi()
        pipe.incr(watched)
        return True

    calls: list[int] = []
    result_b = transaction(b, body_b, watched, backoff=0)
    watched_final = int(a.get(watched) or 0)

    # One script: the read and the write cannot be separated.
    replies = [
        INCR_BELOW(a, keys=[scripted], args=[LIMIT]),
        INCR_BELOW(b, keys=[scripted], args=[LIMIT]),
    ]
    scripted_final = int(a.get(scripted) or 0)
    a.delete(plain, watched, scripted)
    a.close()
    b.close()
    ctx.say(f"limit {LIMIT}; two clients both start from {LIMIT - 1}")
    ctx.say(f"GET, decide, INCR (plain commands): final {plain_final}  <- limit violated")
    ctx.say(
        f"transaction() with WATCH:           final {watched_final} "
        f"(B hit {result_b.conflicts} conflict, re-read, refused)"
    )
    ctx.say(f"one Lua script:                     final {scripted_final} (replies {replies})")
    return (
        plain_final == LIMIT + 1
        and watched_final == LIMIT
        and result_b.conflicts == 1
        and result_b.value is False
        and scripted_final == LIMIT
    )


def _transfers(ctx: DemoContext, version: str) -> tuple[bool, list[object]]:
    names = [ctx.key(f"{{wallets}}:{version}:{i}") for i in range(WALLETS)]
    setup = ctx.client()
    setup.mset(dict.fromkeys(names, START))
    conflicts = moved = refused = 0
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def by_watch(client: Any, src: str, dst: str, amount: int) -> TransactionResult[bool]:
        def body(pipe: Any) -> bool:
            if int(pipe.get(src) or 0) < amount:
                return False
            pipe.multi()
            pipe.decrby(src, amount)
            pipe.incrby(dst, amount)
            return True

        return transaction(client, body, src, retries=100)

    def work(seed: int) -> None:
        nonlocal conflicts, moved, refused
        client = ctx.client()
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(TRANSFERS_PER_THREAD):
            src, dst = rng.sample(names, 2)
            amount = rng.randint(1, 60)
            if version == "watch":
                result = by_watch(client, src, dst, amount)
                ok, retried = bool(result.value), result.conflicts
            else:
                ok, retried = TRANSFER(client, keys=[src, dst], args=[amount]) is not None, 0
            with lock:
                conflicts += retried
                moved += ok
                refused += not ok
        client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - started

    # Commands one transfer sends, counted by MONITOR (the script is cached by now).
    kwargs = setup.connection_pool.connection_kwargs
    with CommandCounter([(kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379)))]) as seen:
        if version == "watch":
            by_watch(setup, names[0], names[1], 1)
        else:
            TRANSFER(setup, keys=[names[0], names[1]], args=[1])
    balances = [int(v or 0) for v in setup.mget(names)]
    setup.delete(*names)
    setup.close()
    total = THREADS * TRANSFERS_PER_THREAD
    conserved = sum(balances) == WALLETS * START and min(balances) >= 0
    label = "transaction() WATCH/MULTI/EXEC" if version == "watch" else "one Lua script"
    row = [
        label,
        f"{elapsed:.2f}s",
        moved,
        refused,
        conflicts,
        f"{seen.count} ({' '.join(seen.names)})",
        f"{sum(balances)} / {WALLETS * START}",
        min(balances),
    ]
    return conserved and moved + refused == total, row


@section("transactions", "Transactions: check-then-act, WATCH vs one Lua script", order=90)
def demo_transactions(ctx: DemoContext) -> bool:
    ok = _race(ctx)
    ctx.say(
        f"{THREADS} threads x {TRANSFERS_PER_THREAD} random transfers between {WALLETS} wallets "
        f"of {START}, refusing to overdraw:"
    )
    rows = []
    for version in ("watch", "script"):
        good, row = _transfers(ctx, version)
        rows.append(row)
        ok = ok and good
    ctx.table(
        [
            "version",
            "time",
            "moved",
            "refused",
            "conflicts retried",
            "commands/transfer",
            "total / start",
            "lowest",
        ],
        rows,
    )
    return ok
