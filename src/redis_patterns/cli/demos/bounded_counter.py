"""Demo: the seed's check-then-increment race, and the one-script BoundedCounter that has none."""

from __future__ import annotations

import threading

from ..._sync.bounded_counter import BoundedCounter
from ..demo import DemoContext, section

THREADS = 16
TRIES = 20
LIMIT = 100


@section("counter", "BoundedCounter: check-and-increment without a race", order=10)
def demo_bounded_counter(ctx: DemoContext) -> bool:
    naive_key, safe_key = ctx.key("naive"), ctx.key("safe")
    barrier = threading.Barrier(THREADS)
    naive_ok: list[int] = []
    safe_ok: list[int] = []
    lock = threading.Lock()

    def naive() -> None:
        client = ctx.client()
        barrier.wait()
        for _ in range(TRIES):
            # The seed's unsafe version: read, decide in the client, then write.
            if int(client.get(naive_key) or 0) < LIMIT:
                client.incr(naive_key)
                with lock:
                    naive_ok.append(1)
        client.close()

    def safe() -> None:
        client = ctx.client()
        counter = BoundedCounter(client, safe_key, LIMIT)
        barrier.wait()
        for _ in range(TRIES):
            if counter.incr() is not None:
                with lock:
                    safe_ok.append(1)
        client.close()

    for target in (naive, safe):
        threads = [threading.Thread(target=target) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    client = ctx.client()
    naive_final = int(client.get(naive_key) or 0)
    safe_final = int(client.get(safe_key) or 0)
    client.delete(naive_key, safe_key)
    client.close()
    ctx.say(f"limit {LIMIT}, {THREADS} threads x {TRIES} attempts each")
    ctx.say(
        f"GET then INCR (the seed's naive code): final value {naive_final}, "
        f"overshoot {naive_final - LIMIT}, {len(naive_ok)} increments admitted"
    )
    ctx.say(
        f"BoundedCounter (one script):           final value {safe_final}, "
        f"overshoot {safe_final - LIMIT}, {len(safe_ok)} increments admitted"
    )
    return safe_final == LIMIT and len(safe_ok) == LIMIT
