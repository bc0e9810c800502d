"""transaction() / async_transaction() on real servers: WATCH conflicts, retries, budget, faults."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from redis_patterns import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    CrossSlotError,
    TransactionConflictError,
    async_transaction,
    transaction,
)
from redis_patterns._core.transaction import transaction_plan
from redis_patterns._plan import Sleep, Transaction, TransactionAttempt, run_canned
from redis_patterns.testing.pytest_plugin import Backend


def _incr_body(key: str) -> Any:
    def body(pipe: Any) -> int:
        value = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, value + 1)
        return value + 1

    return body


def test_commits_and_returns_value_and_exec_results(client: Any, prefix: str) -> None:
    key = f"{{{prefix}}}:n"
    hits = f"{{{prefix}}}:hits"

    def body(pipe: Any) -> int:
        value = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, value + 1)
        pipe.incrby(hits, 5)
        return value + 1

    result = transaction(client, body, key)
    assert result.value == 1
    # redis-py applies its reply callbacks on standalone pipelines only (SET: True vs b"OK").
    assert result.results is not None
    assert result.results[1] == 5
    assert result.results[0] in (True, b"OK")
    assert (result.attempts, result.conflicts, result.executed) == (1, 0, True)
    assert client.get(key) == b"1"


def test_body_that_never_calls_multi_executes_nothing(backend: Backend, prefix: str) -> None:
    client = backend.client()
    key = f"{{{prefix}}}:n"
    client.set(key, 5)

    def read_only(pipe: Any) -> int:
        return int(pipe.get(key))

    transaction(client, read_only, key)  # warm the connection
    with backend.counter() as seen:
        result = transaction(client, read_only, key)
    assert (result.value, result.results, result.executed) == (5, None, False)
    assert "MULTI" not in seen.names
    assert "EXEC" not in seen.names
    assert seen.names[:2] == ["WATCH", "GET"]


def test_commands_on_the_wire(backend: Backend, prefix: str) -> None:
    client = backend.client()
    key = f"{{{prefix}}}:n"
    transaction(client, _incr_body(key), key)
    with backend.counter() as seen:
        transaction(client, _incr_body(key), key)
    assert seen.names == ["WATCH", "GET", "MULTI", "SET", "EXEC"]


def test_conflict_is_retried_from_watch(backend: Backend, prefix: str) -> None:
    client, other = backend.client(), backend.client()
    key = f"{{{prefix}}}:n"
    calls = []

    def body(pipe: Any) -> int:
        value = int(pipe.get(key) or 0)
        calls.append(value)
        if len(calls) == 1:
            other.set(key, 100)  # another client changes the watched key before our EXEC
        pipe.multi()
        pipe.set(key, value + 1)
        return value + 1

    result = transaction(client, body, key, backoff=0)
    assert calls == [0, 100]  # the retry re-read the new value
    assert (result.value, result.attempts, result.conflicts) == (101, 2, 1)
    assert client.get(key) == b"101"


@pytest.mark.parametrize("retries", [0, 3])
def test_gives_up_when_another_client_keeps_changing_the_key(
    backend: Backend, prefix: str, retries: int
) -> None:
    client, other = backend.client(), backend.client()
    key = f"{{{prefix}}}:n"
    attempts = []

    def body(pipe: Any) -> None:
        attempts.append(1)
        pipe.get(key)
        other.incr(key)  # every attempt loses the race
        pipe.multi()
        pipe.set(key, -1)

    with pytest.raises(TransactionConflictError, match="kept changing") as info:
        transaction(client, body, key, retries=retries, backoff=0.001)
    assert info.value.attempts == retries + 1 == len(attempts)
    assert client.get(key) == str(retries + 1).encode()  # our write never landed


def test_gives_up_under_a_background_writer(backend: Backend, prefix: str) -> None:
    client, other, observer = backend.client(), backend.client(), backend.client()
    key = f"{{{prefix}}}:n"
    stop = threading.Event()
    started = threading.Event()

    def hammer() -> None:
        for _ in range(1_000_000):
            if stop.is_set():
                return
            other.incr(key)
            started.set()

    def slow_body(pipe: Any) -> None:
        pipe.get(key)
        # Wait until the writer has certainly written after our WATCH.
        before = int(observer.get(key) or 0)
        for _ in range(10_000):
            if int(observer.get(key) or 0) > before:
                break
            time.sleep(0.001)
        else:
            raise AssertionError("the background writer made no progress in 10 s")
        pipe.multi()
        pipe.set(key, -1)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        with pytest.raises(TransactionConflictError) as info:
            transaction(client, slow_body, key, retries=2, backoff=0)
        assert info.value.attempts == 3
    finally:
        stop.set()
        thread.join(30)
    assert int(client.get(key) or 0) > 0


def test_exceptions_from_the_body_propagate_and_nothing_is_applied(
    client: Any, prefix: str
) -> None:
    key = f"{{{prefix}}}:n"

    def body(pipe: Any) -> None:
        pipe.multi()
        pipe.set(key, 1)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        transaction(client, body, key)
    assert client.exists(key) == 0


def test_backoff_callable_is_used(client: Any, prefix: str) -> None:
    key = f"{{{prefix}}}:n"
    other_writes: list[int] = []
    asked = []

    def body(pipe: Any) -> None:
        pipe.get(key)
        if len(other_writes) < 2:
            other_writes.append(1)
            client.incr(key)
        pipe.multi()
        pipe.set(key, 42)

    def backoff(retry: int) -> float:
        asked.append(retry)
        return 0.0

    result = transaction(client, body, key, backoff=backoff)
    assert asked == [1, 2]
    assert result.attempts == 3
    assert client.get(key) == b"42"


def _noop(pipe: Any) -> None:
    return None


async def _async_noop(pipe: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("fn", "watch", "kwargs", "error"),
    [
        ("not callable", ("k",), {}, ConfigurationError),
        (None, ("k",), {}, ConfigurationError),
        (_noop, ("k",), {"retries": -1}, ConfigurationError),
        (_noop, ("k",), {"retries": 1.5}, ConfigurationError),
        (_noop, ("k",), {"retries": True}, ConfigurationError),
        (_noop, ("k",), {"backoff": -0.1}, ConfigurationError),
        (_noop, ("k",), {"backoff": float("nan")}, ConfigurationError),
        (_noop, ("k",), {"backoff": float("inf")}, ConfigurationError),
        (_noop, ("k",), {"backoff": "1s"}, ConfigurationError),
        (_noop, ("",), {}, ConfigurationError),
        (_noop, (None,), {}, ConfigurationError),
        (_noop, ("a\x00b",), {}, ConfigurationError),
        (_async_noop, ("k",), {}, TypeError),
    ],
)
def test_bad_input_fails_before_any_io(
    backend: Backend, fn: Any, watch: Any, kwargs: Any, error: type[Exception]
) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(error):
        transaction(client, fn, *watch, **kwargs)
    assert seen.count == 0


@pytest.mark.backends("cluster")
def test_cross_slot_watch_fails_before_any_io(backend: Backend, prefix: str) -> None:
    client = backend.client()
    client.ping()
    keys = [f"{prefix}:a", f"{prefix}:b", f"{prefix}:c"]
    with backend.counter() as seen, pytest.raises(CrossSlotError, match="hash tag"):
        transaction(client, _noop, *keys)
    assert seen.count == 0


@pytest.mark.backends("cluster")
async def test_async_cross_slot_watch_fails_before_any_io(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    await client.ping()
    keys = [f"{prefix}:a", f"{prefix}:b", f"{prefix}:c"]
    with backend.counter() as seen, pytest.raises(CrossSlotError, match="slot"):
        await async_transaction(client, _async_noop, *keys)
    assert seen.count == 0
    await client.aclose()


async def test_async_transaction_retries_and_commits(backend: Backend, prefix: str) -> None:
    client, other = backend.async_client(), backend.async_client()
    key = f"{{{prefix}}}:n"
    calls = []

    async def body(pipe: Any) -> int:
        value = int(await pipe.get(key) or 0)
        calls.append(value)
        if len(calls) == 1:
            await other.set(key, 10)
        pipe.multi()
        pipe.set(key, value + 1)
        return value + 1

    result = await async_transaction(client, body, key, backoff=0)
    assert (result.value, result.attempts, result.results) == (11, 2, [True])
    assert await client.get(key) == b"11"
    with pytest.raises(ConfigurationError):
        await async_transaction(client, body, key, retries=-1)
    await client.aclose()
    await other.aclose()


# -- scenario 36: lost updates -------------------------------------------------------------------


@pytest.mark.fault
def test_concurrent_increments_lose_nothing(backend: Backend, prefix: str, scale: Any) -> None:
    clients, each = 16, scale(15, 500)
    key = f"{{{prefix}}}:n"
    commits: list[int] = []
    conflicts: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def work() -> None:
        client = backend.client()
        barrier.wait()
        for _ in range(each):
            try:
                result = transaction(client, _incr_body(key), key, retries=1000)
            except TransactionConflictError as exc:  # allowed, but must be typed
                with lock:
                    failures.append(exc)
                continue
            with lock:
                commits.append(result.value)
                conflicts.append(result.conflicts)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    client = backend.client()
    assert int(client.get(key) or 0) == len(commits)
    # Linearizable as a CAS register: every commit saw a distinct predecessor.
    assert sorted(commits) == list(range(1, len(commits) + 1))
    assert len(commits) + len(failures) == clients * each
    assert sum(conflicts) > 0  # 16 clients on one key do conflict; the retries are reported


@pytest.mark.fault
async def test_async_concurrent_increments_lose_nothing(
    backend: Backend, prefix: str, scale: Any
) -> None:
    tasks, each = 16, scale(15, 500)
    client = backend.async_client()
    await client.ping()  # redis-py's async cluster client initializes on first use: not racing
    key = f"{{{prefix}}}:n"

    async def body(pipe: Any) -> int:
        value = int(await pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, value + 1)
        return value + 1

    async def work() -> list[int]:
        out = []
        for _ in range(each):
            result = await async_transaction(client, body, key, retries=1000)
            out.append(result.value)
        return out

    results = await asyncio.gather(*(work() for _ in range(tasks)))
    values = sorted(v for r in results for v in r)
    assert values == list(range(1, tasks * each + 1))
    assert int(await client.get(key) or 0) == tasks * each
    await client.aclose()


# -- scenario 37: the connection dies between WATCH and EXEC ------------------------------------


def _admin_for(backend: Backend, client: Any, key: str) -> Any:
    """A plain client to the node owning ``key``, so a kill hits our connection and only it."""
    if not backend.is_cluster:
        return backend.client()
    port = client.get_node_from_key(key).port
    return next(s for s in backend.servers if s.port == port).client()


def _connection_id(admin: Any, pipe: Any) -> int:
    """The server-side id of the connection a transaction pipeline has pinned."""
    strategy = getattr(pipe, "_execution_strategy", None)
    conn = strategy._transaction_connection if strategy is not None else pipe.connection
    host, port = conn._sock.getsockname()[:2]
    for entry in admin.client_list():
        if entry["addr"] == f"{host}:{port}":
            return int(entry["id"])
    raise AssertionError("the pipeline's connection is not in CLIENT LIST")


@pytest.mark.fault
def test_connection_killed_between_watch_and_exec_is_never_replayed(
    backend: Backend, prefix: str, scale: Any
) -> None:
    client = backend.client()
    key = f"{{{prefix}}}:n"
    admin = _admin_for(backend, client, key)
    rounds = scale(30, 1000)
    commits = lost = 0
    for i in range(rounds):
        kill = i % 2 == 0
        phase = "before_multi" if i % 4 == 0 else "before_exec"

        def body(pipe: Any, kill: bool = kill, phase: str = phase) -> None:
            value = int(pipe.get(key) or 0)  # immediate: runs on the pinned, watching connection
            if kill and phase == "before_multi":
                admin.client_kill_filter(_id=_connection_id(admin, pipe))
                pipe.get(key)  # fails: the watching connection is gone
            pipe.multi()
            pipe.set(key, value + 1)
            if kill and phase == "before_exec":
                admin.client_kill_filter(_id=_connection_id(admin, pipe))

        try:
            transaction(client, body, key)
        except BackendUnavailableError:
            assert kill
            assert phase == "before_multi"
            lost += 1
        except BackendTimeoutError:
            assert kill
            assert phase == "before_exec"
            lost += 1
        else:
            commits += 1
    assert lost == (rounds + 1) // 2
    # The server dropped the MULTI state with the connection: no EXEC ever ran twice or late.
    assert int(client.get(key) or 0) == commits == rounds // 2


@pytest.mark.fault
def test_reconnect_never_drops_the_watch(backend: Backend, prefix: str) -> None:
    """A connection lost after the read must not let EXEC overwrite a concurrent write.

    redis-py's cluster pipeline would reconnect and EXEC without the WATCH (a lost update);
    the runner turns that retry off, so the attempt fails instead.
    """
    client, other = backend.client(), backend.client()
    key = f"{{{prefix}}}:n"
    client.set(key, 1)
    admin = _admin_for(backend, client, key)

    def body(pipe: Any) -> None:
        value = int(pipe.get(key) or 0)
        admin.client_kill_filter(_id=_connection_id(admin, pipe))
        other.set(key, 100)  # a concurrent write our WATCH must protect
        pipe.multi()
        pipe.set(key, value + 1)

    with pytest.raises((BackendTimeoutError, BackendUnavailableError)):
        transaction(client, body, key)
    assert client.get(key) == b"100"


# -- scenario 38: resharding while transactions run ------------------------------------------


@pytest.mark.fault
@pytest.mark.backends("cluster")
def test_hash_tagged_transactions_survive_resharding(
    backend: Backend, prefix: str, scale: Any
) -> None:
    from redis.crc import key_slot

    client: Any = backend.client()
    key = f"{{{prefix}}}:n"
    slot = key_slot(key.encode())
    client.set(key, 0)
    cluster = backend.embedded_cluster
    assert cluster is not None
    home = cluster.master_of(slot)
    away = next(master for master in cluster.masters() if master is not home)
    stop = threading.Event()
    commits: list[int] = []
    failures: list[BaseException] = []

    def work() -> None:
        worker: Any = backend.client()
        for _ in range(100_000):
            if stop.is_set():
                return
            try:
                result = transaction(worker, _incr_body(key), key, retries=500, backoff=0.002)
            except (TransactionConflictError, BackendUnavailableError, BackendTimeoutError) as exc:
                failures.append(exc)
            else:
                commits.append(result.value)
                retried.append(result.conflicts)

    retried: list[int] = []
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    moves = scale(4, 40)
    try:
        for i in range(moves):
            # SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as redis-cli --cluster reshard
            cluster.move_slots(slot, slot, away if i % 2 == 0 else home)
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(120)
        cluster.move_slots(slot, slot, home)  # nothing to do when it is back home already
    value = int(client.get(key) or 0)
    unknown = sum(isinstance(f, BackendTimeoutError) for f in failures)
    assert len(commits) > 0
    # Every commit is in the value exactly once; an outcome-unknown EXEC may add at most one.
    assert len(commits) <= value <= len(commits) + unknown
    assert sorted(commits) == sorted(set(commits))
    assert sum(retried) > 0  # the moves were seen (MOVED/ASK) and retried from WATCH


# -- the plan alone (no server) -----------------------------------------------------------------


def test_plan_sleeps_with_jitter_between_conflicts_and_gives_up() -> None:
    import random

    plan = transaction_plan(_noop, ["k"], retries=3, backoff=0.01, sync=True, rng=random.Random(7))
    conflict = TransactionAttempt(False)
    with pytest.raises(TransactionConflictError) as info:
        run_canned(plan, [conflict, None, conflict, None, conflict, None, conflict])
    assert info.value.attempts == 4


def test_plan_backoff_doubles_within_full_jitter_bounds() -> None:
    import random

    plan = transaction_plan(_noop, ["k"], retries=8, backoff=0.01, sync=True, rng=random.Random(1))
    conflict = TransactionAttempt(False)
    replies: list[object] = []
    for _ in range(8):
        replies += [conflict, None]
    replies.append(TransactionAttempt(True, "v", []))
    result, effects = run_canned(plan, replies)
    assert (result.value, result.attempts) == ("v", 9)
    sleeps = [e.seconds for e in effects if isinstance(e, Sleep)]
    assert len(sleeps) == 8
    for retry, seconds in enumerate(sleeps, 1):
        assert 0 <= seconds <= 0.01 * 2 ** min(retry - 1, 6)
    assert all(isinstance(e, Transaction) for e in effects if not isinstance(e, Sleep))
