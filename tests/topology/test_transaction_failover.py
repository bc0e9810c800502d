"""transaction() recovers after the watched slot's master is SIGKILLed, never applying EXEC twice.

Two workers share one cluster client that never re-sends and run transactions on one hash-tagged
key (each increments a counter and appends its own unique id); a third hits a rate limiter on
the same master through the runner's `Eval`, on a client of its own (a plain command refreshes
the client's cluster map, which would hide the transactions' own recovery). Then the master is
SIGKILLed and its replica promoted. The history of every call is compared with what the server
holds at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncTokenBucket,
    BackendError,
    BackendUnavailableError,
    EmbeddedCluster,
    TokenBucket,
    TransactionConflictError,
    async_transaction,
    transaction,
)
from redis_patterns.testing import Event, History, Promotion
from redis_patterns.testing.history import monotonic

pytestmark = pytest.mark.fault

WARM_UP = 20  # calls of each worker before the kill
AFTER = 20  # calls of each worker that must succeed once the cluster has settled
BOUND = 15.0  # seconds any phase may take
# Before EXEC nothing was applied (BackendUnavailableError); a conflict budget running out is
# a refusal too. Any other error leaves the outcome unknown.
_NOT_APPLIED = (BackendUnavailableError, TransactionConflictError)


def _record(
    history: History, op: str, proc: str, uid: str
) -> Callable[[BaseException | None], None]:
    started = history.invoke(op, proc, uid)

    def complete(error: BaseException | None) -> None:
        if error is None:
            started.ok(uid)
        elif isinstance(error, _NOT_APPLIED):
            started.fail(uid)
        else:
            started.info(uid)

    return complete


def _limiter_name(cluster: EmbeddedCluster, limiter: Any, key: str, prefix: str) -> str:
    """A limiter name whose key lives on the same master as ``key``."""
    home = cluster.master_of(key)
    for index in range(10_000):
        name = f"{prefix}-{index}"
        if cluster.master_of(limiter.keys(name)[0]) is home:
            return name
    raise AssertionError("no limiter name on the watched master")


def _ok_after(history: History, proc: str, moment: float) -> int:
    return sum(e.proc == proc and e.status == "ok" and e.invoke_t >= moment for e in history.events)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _refresh_pacing(client: Any) -> float:
    """Seconds redis-py waits between two map refreshes that errors ask for: from redis-py 8.2
    at most one a second by default (``topology_refresh_min_interval``); before, none."""
    nodes = client.nodes_manager
    if not hasattr(nodes, "_topology_refresh_min_interval"):
        return 0.0
    interval = nodes._topology_refresh_min_interval
    return 1.0 if interval is None else float(interval)


def _judge(
    history: History,
    promotion: Promotion,
    settled_at: float,
    value: int,
    ids: list[bytes],
    procs: list[str],
    pacing: float,
) -> None:
    events = history.events
    by_status: dict[str, set[str]] = {"ok": set(), "fail": set(), "info": set()}
    for event in events:
        if event.op == "txn":
            by_status[event.status].add(event.value)
    applied = [i.decode() for i in ids]
    # The counter and the list are written by one EXEC: one entry per applied transaction.
    assert value == len(applied)
    # No EXEC was applied twice: every id at most once.
    assert len(set(applied)) == len(applied)
    # Nothing reported as not applied was applied; every applied id was sent by a worker.
    assert not set(applied) & by_status["fail"]
    assert set(applied) <= by_status["ok"] | by_status["info"]
    # What was acknowledged once the new master served is all there; only acknowledgements
    # from the dead master may be lost (asynchronous replication).
    late = {
        e.value for e in events if e.op == "txn" and e.status == "ok" and e.invoke_t >= settled_at
    }
    assert late <= set(applied)
    lost = by_status["ok"] - set(applied)
    assert all(e.invoke_t < promotion.at for e in events if e.value in lost)
    # Recovery: once every node agreed on the new map, each worker failed at most once (the
    # call that finds its map stale and refreshes it), then succeeded again and again. A
    # transaction refreshes the map itself on the failure; the limiter's hit leaves that to
    # redis-py, which runs a refresh an error asked for at most once per ``pacing`` seconds,
    # so the hit's one failure is counted from then.
    bad: list[Event] = [e for e in events if e.status != "ok"]
    for proc in procs:
        since = settled_at + (pacing if proc == "hit" else 0.0)
        assert sum(e.proc == proc and e.invoke_t >= since for e in bad) <= 1, proc
        assert _ok_after(history, proc, settled_at) >= AFTER, proc
    # ... and within twice the promotion time of the kill (and the pacing).
    last_bad = max((e.complete_t for e in bad), default=promotion.at)
    recovered = min(e.complete_t for e in events if e.status == "ok" and e.invoke_t > last_bad)
    assert recovered - promotion.at <= 2 * promotion.promoted_after + pacing
    print(
        f"promoted after {promotion.promoted_after:.2f} s, settled after "
        f"{promotion.settled_after:.2f} s, calls succeed again {recovered - promotion.at:.2f} s "
        f"after the kill; {len(by_status['ok'])} acknowledged, {len(by_status['fail'])} refused, "
        f"{len(by_status['info'])} unknown, {len(applied)} applied, {len(lost)} acknowledged "
        f"commits lost with the dead master; {len(bad)} failed calls in all"
    )


def test_transactions_recover_after_the_master_is_killed(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated_cluster
    client: Any = cluster.client(retry=Retry(NoBackoff(), 0), socket_timeout=1.0)
    other: Any = cluster.client(retry=Retry(NoBackoff(), 0), socket_timeout=1.0)
    key, ids_key = f"{{{prefix}}}:n", f"{{{prefix}}}:ids"
    limiter = TokenBucket(other, 10**9, 1.0)
    name = _limiter_name(cluster, limiter, key, prefix)
    history = History()
    stop = threading.Event()
    procs = ["txn-0", "txn-1", "hit"]

    def body(uid: str) -> Callable[[Any], None]:
        def run(pipe: Any) -> None:
            pipe.get(key)  # a read on the watching connection
            pipe.multi()
            pipe.incr(key)
            pipe.rpush(ids_key, uid)

        return run

    def work(proc: str) -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            uid = f"{proc}-{n}"
            complete = _record(history, "txn" if proc != "hit" else "hit", proc, uid)
            try:
                if proc == "hit":
                    limiter.hit(name)
                else:
                    transaction(client, body(uid), key)
            except BackendError as exc:
                complete(exc)
            else:
                complete(None)
            time.sleep(0.002)

    threads = [threading.Thread(target=work, args=(proc,), daemon=True) for proc in procs]
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: all(_ok_after(history, p, 0) >= WARM_UP for p in procs), "no warm-up")
        promotion = cluster.kill_master(cluster.master_of(key))
        settled_at = monotonic()
        _wait(
            lambda: all(_ok_after(history, p, settled_at) >= AFTER for p in procs),
            "the workers did not recover after the failover",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(BOUND)
    value, ids = int(client.get(key) or 0), client.lrange(ids_key, 0, -1)
    pacing = _refresh_pacing(other)
    client.close()
    other.close()
    _judge(history, promotion, settled_at, value, ids, procs, pacing)


async def test_async_transactions_recover_after_the_master_is_killed(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated_cluster
    options: dict[str, Any] = {"retry": AsyncRetry(NoBackoff(), 0), "socket_timeout": 1.0}
    client: Any = cluster.client(asyncio=True, **options)
    other: Any = cluster.client(asyncio=True, **options)
    key, ids_key = f"{{{prefix}}}:n", f"{{{prefix}}}:ids"
    limiter = AsyncTokenBucket(other, 10**9, 1.0)
    name = _limiter_name(cluster, limiter, key, prefix)
    history = History()
    stopped = asyncio.Event()
    procs = ["txn-0", "txn-1", "hit"]

    def body(uid: str) -> Callable[[Any], Any]:
        async def run(pipe: Any) -> None:
            await pipe.get(key)
            pipe.multi()
            pipe.incr(key)
            pipe.rpush(ids_key, uid)

        return run

    async def work(proc: str) -> None:
        for n in range(1_000_000):
            if stopped.is_set():
                return
            uid = f"{proc}-{n}"
            complete = _record(history, "txn" if proc != "hit" else "hit", proc, uid)
            try:
                if proc == "hit":
                    await limiter.hit(name)
                else:
                    await async_transaction(client, body(uid), key)
            except BackendError as exc:
                complete(exc)
            else:
                complete(None)
            await asyncio.sleep(0.002)

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + BOUND
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    tasks = [asyncio.ensure_future(work(proc)) for proc in procs]
    try:
        await until(lambda: all(_ok_after(history, p, 0) >= WARM_UP for p in procs), "no warm-up")
        master = cluster.master_of(key)
        promotion = await asyncio.to_thread(cluster.kill_master, master)  # the loop keeps running
        settled_at = monotonic()
        await until(
            lambda: all(_ok_after(history, p, settled_at) >= AFTER for p in procs),
            "the workers did not recover after the failover",
        )
    finally:
        stopped.set()
        await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
    value, ids = int(await client.get(key) or 0), await client.lrange(ids_key, 0, -1)
    pacing = _refresh_pacing(other)
    await client.aclose()
    await other.aclose()
    _judge(history, promotion, settled_at, value, ids, procs, pacing)
