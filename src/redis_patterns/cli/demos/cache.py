"""Demo: a 50-way cache stampede with each protection, near-cache hits, a write-behind crash."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._core.cache_types import Stampede
from ..._core.cache_write import PendingWrite
from ..._sync.cache import Cache
from ..._sync.cache_write import WriteBehind
from ..demo import DemoContext, section

CALLERS = 50
LOADER_SECONDS = 0.2


def _stampede(ctx: DemoContext, name: str, get: Callable[[int, Callable[[], str]], Any]) -> int:
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CALLERS)

    def loader() -> str:
        with lock:
            calls.append(1)
        time.sleep(LOADER_SECONDS)
        return "row 42"

    def caller(i: int) -> None:
        barrier.wait()
        get(i, loader)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ctx.say(f"{name:44} loader calls: {len(calls):2}   ({elapsed * 1000:.0f} ms)")
    return len(calls)


def _via(caches: list[Cache]) -> Callable[[int, Callable[[], str]], Any]:
    def get(i: int, loader: Callable[[], str]) -> Any:
        return caches[i].get_or_load("hot", loader)

    return get


@section("cache", "Cache: stampede protection, near cache, write-behind", order=30)
def demo_cache(ctx: DemoContext) -> bool:
    ok = True
    clients = [ctx.client() for _ in range(CALLERS)]
    ctx.say(f"{CALLERS} callers (each its own client, as separate processes would be) miss one")
    ctx.say(f"cold key; the loader takes {LOADER_SECONDS * 1000:.0f} ms:")

    naive_key = ctx.key("naive")

    def naive(i: int, loader: Callable[[], str]) -> Any:
        # The seed's cache-aside: GET, on a miss load and SET. Nothing stops the herd.
        value = clients[i].get(naive_key)
        if value is None:
            value = loader()
            clients[i].set(naive_key, value, ex=60)
        return value

    calls = {"naive": _stampede(ctx, "GET / load / SET (seed's cache-aside)", naive)}
    modes: list[Stampede] = [None, "lock", "xfetch"]
    for mode in modes:
        namespace = ctx.key(f"m{mode}").replace(":", ".")
        caches = [Cache(c, namespace, 60, stampede=mode) for c in clients]
        label = f"Cache(stampede={mode!r})" + (" no cross-process lock" if mode is None else "")
        calls[str(mode)] = _stampede(ctx, label, _via(caches))
    ok &= calls["naive"] > 1 and calls["lock"] == 1 and calls["xfetch"] == 1

    # Stale-while-revalidate: with a stale value present nobody waits for the loader.
    swr = [
        Cache(c, ctx.key("swr").replace(":", "."), 0.05, jitter=0, stale_ttl=60) for c in clients
    ]
    swr[0].set("hot", "old")
    time.sleep(0.1)
    waits: list[float] = []

    def stale_reader(i: int, loader: Callable[[], str]) -> Any:
        started = time.perf_counter()
        value = swr[i].get_or_load("hot", loader)
        waits.append(time.perf_counter() - started)
        return value

    refreshed = _stampede(ctx, "stale value present (stale-while-revalidate)", stale_reader)
    ctx.say(f"  slowest caller waited {max(waits) * 1000:.1f} ms (the loader takes 200 ms)")
    deadline = time.monotonic() + 5
    while swr[0].get("hot") != "row 42" and time.monotonic() < deadline:
        time.sleep(0.01)
    ok &= refreshed == 1 and max(waits) < LOADER_SECONDS and swr[0].get("hot") == "row 42"

    # Near cache vs a Redis hit.
    near = Cache(clients[0], ctx.key("near").replace(":", "."), 60, local=1000)
    remote = Cache(clients[1], ctx.key("near").replace(":", "."), 60)
    near.set("user:42", {"name": "Ada", "roles": ["admin"]})
    deadline = time.monotonic() + 5
    while not near.local_ready and time.monotonic() < deadline:
        time.sleep(0.005)
    near.get("user:42")
    rounds = 2000
    timings = {}
    for label, cache in (
        ("Redis hit (one round trip)", remote),
        ("near-cache hit (no round trip)", near),
    ):
        started = time.perf_counter()
        for _ in range(rounds):
            cache.get("user:42")
        timings[label] = (time.perf_counter() - started) / rounds
        ctx.say(f"{label:44} {timings[label] * 1e6:8.1f} us/get")
    remote.set("user:42", {"name": "Grace"})
    time_set = time.perf_counter()
    while near.get("user:42") != {"name": "Grace"} and time.perf_counter() - time_set < 5:
        time.sleep(0.0002)
    delay = time.perf_counter() - time_set
    ctx.say(f"another writer's set reached this near cache after {delay * 1000:.2f} ms")
    ok &= near.get("user:42") == {"name": "Grace"}
    near.close()

    ok &= _write_behind(ctx, clients[2])
    for client in clients:
        client.close()
    return bool(ok)


def _write_behind(ctx: DemoContext, client: Any) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "app.sqlite", check_same_thread=False)
        db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER, version INTEGER)")
        db_writes = [0]

        def flush(batch: list[PendingWrite], crash_after: int | None = None) -> None:
            for n, write in enumerate(batch):
                if crash_after is not None and n == crash_after:
                    raise SystemError("flusher A stops mid-batch, acknowledging nothing")
                with db:
                    db.execute(
                        "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET "
                        "v = excluded.v, version = excluded.version "
                        "WHERE excluded.version > kv.version",
                        (write.key, write.value, write.version),
                    )
                db_writes[0] += 1

        cache = Cache(client, ctx.key("wb").replace(":", "."), 600)
        writes, keys = 2000, 100
        behind_a = WriteBehind(
            cache, lambda b: flush(b, crash_after=10), batch_size=500, claim_idle=0.2
        )
        expected = {}
        for i in range(writes):
            behind_a.write(f"k{i % keys}", i)
            expected[f"k{i % keys}"] = i
        behind_a.flush_once("flusher-a")
        left = behind_a.pending()
        ctx.say(f"write-behind: {writes} writes over {keys} keys; flusher A stops mid-batch")
        ctx.say(f"  after 10 rows, acknowledging nothing (as if killed): {left} writes unflushed")
        time.sleep(0.25)  # past claim_idle: flusher B takes A's entries over
        behind_b = WriteBehind(cache, flush, batch_size=500, claim_idle=0.2, interval=0)
        behind_b.run("flusher-b", max_cycles=20)
        table = dict(db.execute("SELECT k, v FROM kv").fetchall())
        db.close()
        lost = sum(1 for k, v in expected.items() if table.get(k) != v)
        ctx.say(
            f"flusher B reclaimed and flushed: {len(table)} keys, {lost} lost, "
            f"{db_writes[0]} database writes for {writes} cache writes "
            f"({writes / max(1, db_writes[0]):.0f}x coalescing)"
        )
        return lost == 0 and behind_b.pending() == 0
