"""Lock / AsyncLock / FencedStore on real servers: semantics, round trips, bad input."""

from __future__ import annotations

import asyncio
import gc
import math
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redis_patterns import (
    AsyncFencedStore,
    AsyncLock,
    ConfigurationError,
    EmbeddedCluster,
    FencedStore,
    Lock,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    StaleFenceError,
)
from redis_patterns._background import THREAD_NAME
from redis_patterns.testing.pytest_plugin import Backend


def _wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_acquire_release_roundtrip(client: Any, prefix: str) -> None:
    lock = Lock(client, prefix, ttl=5)
    assert lock.token is None
    assert lock.fence is None
    assert lock.acquire() is True
    assert isinstance(lock.fence, int)
    assert lock.fence > 0
    assert lock.locked()
    assert lock.owned()
    remaining = lock.ttl()
    assert remaining is not None
    assert 0 < remaining <= 5
    assert client.get(f"{{lock:{prefix}}}") == str(lock.token).encode()
    assert client.pttl(f"{{lock:{prefix}}}:fence") > 0  # the counter expires too
    lock.release()
    assert not lock.locked()
    assert not lock.owned()
    assert lock.ttl() is None


def test_second_holder_waits_then_times_out(client: Any, prefix: str) -> None:
    first, second = Lock(client, prefix, ttl=5), Lock(client, prefix, ttl=5, timeout=0.2)
    assert first.acquire()
    assert second.acquire(blocking=False) is False
    assert second.acquire(timeout=0.1) is False
    with pytest.raises(LockTimeoutError), second:
        pass
    first.release()
    with second:
        assert second.owned()
    assert not second.locked()


def test_waiter_gets_lock_after_release(client: Any, prefix: str) -> None:
    holder, waiter = Lock(client, prefix, ttl=10), Lock(client, prefix, ttl=10)
    holder.acquire()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.acquire(timeout=20)))
    thread.start()
    time.sleep(0.1)
    holder.release()
    thread.join(30)
    assert result == [True]
    assert waiter.fence is not None
    assert holder.fence is not None
    assert waiter.fence > holder.fence
    waiter.release()


def test_fences_strictly_increase(client: Any, prefix: str) -> None:
    fences = []
    for _ in range(20):
        lock = Lock(client, prefix, ttl=5)
        lock.acquire()
        fences.append(lock.fence)
        lock.release()
    assert fences == sorted(set(fences))  # type: ignore[type-var]


def test_fence_stays_monotonic_when_counter_is_lost(client: Any, prefix: str) -> None:
    lock = Lock(client, prefix, ttl=5)
    lock.acquire()
    before = lock.fence
    lock.release()
    client.delete(f"{{lock:{prefix}}}:fence")  # as after retention, a restart or a failover
    lock.acquire()
    assert lock.fence is not None
    assert before is not None
    assert lock.fence > before
    lock.release()


def test_expired_and_taken_lock_cannot_be_released_or_extended(client: Any, prefix: str) -> None:
    a_release, a_extend = Lock(client, prefix, ttl=0.1), Lock(client, prefix, ttl=0.1)
    assert a_release.acquire()
    assert _wait_until(lambda: not a_release.locked())
    b = Lock(client, prefix, ttl=30)
    assert b.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        a_release.release()
    assert b.owned()
    assert (b.ttl() or 0) > 20
    b.release()

    assert a_extend.acquire()
    assert _wait_until(lambda: not a_extend.locked())
    assert b.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        a_extend.extend(10)
    assert a_extend.lost
    with pytest.raises(LockNotOwnedError):
        a_extend.release()
    assert b.owned()
    assert (b.ttl() or 0) > 20
    b.release()


def test_extend_resets_remaining_lease(client: Any, prefix: str) -> None:
    lock = Lock(client, prefix, ttl=1)
    lock.acquire()
    lock.extend(20)
    assert (lock.ttl() or 0) > 10
    lock.extend()
    assert (lock.ttl() or 99) <= 1
    lock.release()


def test_extend_never_recreates_a_missing_key(client: Any, prefix: str) -> None:
    lock = Lock(client, prefix, ttl=5)
    lock.acquire()
    client.delete(lock.key)
    with pytest.raises(LockNotOwnedError):
        lock.extend()
    assert client.exists(lock.key) == 0


def test_reacquire_while_held_is_refused(client: Any, prefix: str) -> None:
    lock = Lock(client, prefix, ttl=5)
    lock.acquire()
    with pytest.raises(LockError, match="already holds"):
        lock.acquire()
    lock.release()
    assert lock.acquire()
    lock.release()


def test_ownership_is_the_object_not_the_thread(client: Any, prefix: str) -> None:
    # redis-py keeps the token in threading.local(): another thread could not release.
    lock = Lock(client, prefix, ttl=5)
    lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=release)
    thread.start()
    thread.join()
    assert errors == []
    assert not lock.locked()


async def test_task_cannot_release_another_tasks_lock(async_client: Any, prefix: str) -> None:
    mine, theirs = AsyncLock(async_client, prefix, ttl=5), AsyncLock(async_client, prefix, ttl=5)
    held = asyncio.Event()
    done = asyncio.Event()

    async def holder() -> None:
        await theirs.acquire()
        held.set()
        await done.wait()
        await theirs.release()

    task = asyncio.create_task(holder())
    await held.wait()
    with pytest.raises(LockNotOwnedError):
        await mine.release()
    assert await theirs.owned()
    done.set()
    await task
    assert not await mine.locked()


async def test_async_basics(async_client: Any, prefix: str) -> None:
    lock = AsyncLock(async_client, prefix, ttl=5, timeout=0.2)
    async with lock:
        assert await lock.owned()
        other = AsyncLock(async_client, prefix, ttl=5, timeout=0.1)
        with pytest.raises(LockTimeoutError):
            async with other:
                pass
        await lock.extend(10)
        assert (await lock.ttl() or 0) > 5
    assert not await lock.locked()
    with pytest.raises(LockNotOwnedError):
        await lock.release()


async def test_async_release_survives_cancellation(async_client: Any, prefix: str) -> None:
    lock = AsyncLock(async_client, prefix, ttl=30)
    for _ in range(5):
        await lock.acquire()
        token = lock.token
        task = asyncio.create_task(lock.release())
        await asyncio.sleep(0)  # the release has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):
            if not await lock.locked():
                break
            await asyncio.sleep(0.01)
        assert not await lock.locked()  # the key is not left behind
        assert lock.token == token  # nor the token forgotten
        with pytest.raises(LockNotOwnedError):
            await lock.release()


async def test_hundred_tasks_mutual_exclusion(backend: Backend, prefix: str) -> None:
    client = backend.async_client(driver_info=None)
    key = f"{prefix}:n"
    # redis-py 8.1's asyncio RedisCluster drops connections with >= 10 concurrent tasks (even
    # for plain SETs, without this library); cap the cluster run's concurrency below that.
    gate = asyncio.Semaphore(4 if backend.is_cluster else 100)

    async def work() -> int:
        lock = AsyncLock(client, prefix, ttl=10, timeout=60)
        async with gate, lock:
            value = int(await client.get(key) or 0)  # a racy GET/SET, made safe by the lock
            await asyncio.sleep(0)
            await client.set(key, value + 1)
            fence = lock.fence
            assert fence is not None
            return fence

    fences = await asyncio.gather(*(work() for _ in range(100)))
    assert int(await client.get(key) or 0) == 100
    assert len(set(fences)) == 100
    await client.aclose()


def test_one_command_per_acquire_release_extend(backend: Backend, prefix: str) -> None:
    client = backend.client()
    warm = Lock(client, prefix, ttl=5)
    warm.acquire()
    warm.extend()
    warm.release()  # scripts cached, native-command probe done for this client
    lock, other = Lock(client, prefix, ttl=5), Lock(client, prefix, ttl=5)
    native = backend.kind != "redis7"  # Valkey 9 has DELIFEQ and SET IFEQ
    with backend.counter() as seen:
        lock.acquire()
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert other.acquire(blocking=False) is False
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        lock.extend()
    assert seen.names == (["SET"] if native else ["EVALSHA"])
    with backend.counter() as seen:
        lock.release()
    assert seen.names == (["DELIFEQ"] if native else ["EVALSHA"])
    assert seen.inside_scripts == [] or not native


@pytest.mark.backends("redis7")
def test_native_probe_falls_back_to_lua_once(backend: Backend, prefix: str) -> None:
    client = backend.client()
    lock = Lock(client, prefix, ttl=5)
    native = lock._runner.features  # the client's feature record, shared by its locks
    lock.acquire()
    assert native.delifeq is None
    with backend.counter() as seen:
        lock.release()  # DELIFEQ is refused as unknown (MONITOR does not show it): the script
    assert seen.names == ["EVALSHA"]
    assert not lock.locked()
    assert native.delifeq is False
    lock.acquire()
    with backend.counter() as seen:
        lock.extend()
        lock.release()
    assert seen.names == ["EVALSHA", "EVALSHA"]


@pytest.fixture(scope="module")
def redis7_cluster() -> Iterator[EmbeddedCluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server (Redis 7) is not on PATH")
    with EmbeddedCluster(3, "redis-server") as made:
        yield made


def test_redis7_cluster_falls_back_to_lua(redis7_cluster: EmbeddedCluster, prefix: str) -> None:
    # redis-py's cluster router refuses DELIFEQ itself ("doesn't exist") before sending it.
    lock = Lock(redis7_cluster.client(), prefix, ttl=5)
    for _ in range(2):
        assert lock.acquire()
        lock.extend()
        lock.release()
        assert not lock.locked()


async def test_async_one_command_each(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    warm = AsyncLock(client, prefix, ttl=5)
    await warm.acquire()
    await warm.release()
    lock = AsyncLock(client, prefix, ttl=5)
    with backend.counter() as seen:
        await lock.acquire()
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        await lock.release()
    assert len(seen.names) == 1
    await client.aclose()


BAD_LOCKS: list[tuple[Any, dict[str, Any]]] = [
    ("", {}),
    (None, {}),
    (42, {}),
    (True, {}),
    ("a{b}", {}),
    ("x" * 2000, {}),
    ("ok", {"ttl": 0}),
    ("ok", {"ttl": -1}),
    ("ok", {"ttl": math.nan}),
    ("ok", {"ttl": math.inf}),
    ("ok", {"ttl": True}),
    ("ok", {"ttl": "1"}),
    ("ok", {"ttl": 0.0001}),
    ("ok", {"timeout": -1}),
    ("ok", {"timeout": math.nan}),
    ("ok", {"max_hold": 5}),  # without auto_renew
    ("ok", {"auto_renew": 1}),
]


@pytest.mark.parametrize(("name", "kwargs"), BAD_LOCKS)
def test_bad_lock_arguments_fail_before_io(backend: Backend, name: Any, kwargs: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        Lock(client, name, **kwargs).acquire()
    assert seen.count == 0


def test_bad_calls_fail_before_io(backend: Backend, prefix: str) -> None:
    client = backend.client()
    client.ping()
    lock = Lock(client, prefix, ttl=5)
    with backend.counter() as seen:
        with pytest.raises(LockNotOwnedError):
            lock.release()
        with pytest.raises(LockNotOwnedError):
            lock.extend()
        with pytest.raises(ConfigurationError):
            lock.acquire(blocking=False, timeout=1)
        with pytest.raises(ConfigurationError):
            lock.acquire(timeout=-1)
        with pytest.raises(ConfigurationError):
            lock.acquire(blocking="yes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Lock(client, prefix, on_lost=42)  # type: ignore[arg-type]
        store = FencedStore(client, prefix)
        bad_fences: tuple[Any, ...] = (-1, True, 1.5, "3", 2**53)
        for fence in bad_fences:
            with pytest.raises(ConfigurationError):
                store.write(fence, "f", "v")
        with pytest.raises(ConfigurationError):
            store.write(1, "", "v")
        with pytest.raises(TypeError):
            store.write(1, "f", None)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            FencedStore(client, "")
    assert seen.count == 0
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        lock.extend(0)
    assert seen.count == 0


def test_sync_client_refused_by_async_lock(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncLock(backend.client(), "k")  # type: ignore[arg-type]


def test_fenced_store_accepts_equal_or_newer(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = FencedStore(client, prefix)
    store.write(10, "owner", "a")
    store.write(10, "owner", "a2")  # the same holder writes again
    store.write(11, "owner", "b")
    with pytest.raises(StaleFenceError, match="fence 11 was already accepted"):
        store.write(10, "owner", "stale")
    assert store.read("owner") == b"b"
    assert store.highest() == 11
    store.write(11, "count", 3)
    with backend.counter() as seen:
        store.write(12, "owner", "c")
    assert seen.names == ["EVALSHA"]
    store.clear()
    assert store.highest() is None


async def test_async_fenced_store_with_lock_fences(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncFencedStore(client, prefix)
    old, new = AsyncLock(client, prefix, ttl=5), AsyncLock(client, prefix, ttl=5)
    await old.acquire()
    old_fence = old.fence
    await old.release()
    await new.acquire()
    assert new.fence is not None
    assert old_fence is not None
    await store.write(new.fence, "v", "new")
    with pytest.raises(StaleFenceError):
        await store.write(old_fence, "v", "old")
    assert await store.read("v") == b"new"
    await new.release()
    await client.aclose()


# --- watchdog ---------------------------------------------------------------------------


def test_watchdog_keeps_lock_past_ttl(backend: Backend, prefix: str, scale: Any) -> None:
    client = backend.client()
    lock = Lock(client, prefix, ttl=1, auto_renew=True)
    rival = Lock(backend.client(), prefix, ttl=1)
    assert lock.acquire()
    hold = scale(2.0, 5.0)
    deadline = time.monotonic() + hold
    attempts = 0
    while time.monotonic() < deadline:
        assert rival.acquire(blocking=False) is False
        attempts += 1
        time.sleep(0.05)
    assert attempts > 10
    assert lock.owned()
    assert not lock.lost
    lock.release()
    assert rival.acquire(blocking=False)
    rival.release()


def test_watchdog_detects_deleted_key_with_one_renewal(backend: Backend, prefix: str) -> None:
    client = backend.client()
    lost = threading.Event()
    seen_lock: list[Lock] = []

    def on_lost(lock: Lock) -> None:
        seen_lock.append(lock)
        lost.set()

    lock = Lock(client, prefix, ttl=0.6, auto_renew=True, on_lost=on_lost)
    assert lock.acquire()
    time.sleep(0.3)  # at least one renewal went through (and warmed the scripts)
    assert lock.owned()
    outside = backend.client()
    outside.ping()
    with backend.counter() as seen:
        outside.delete(lock.key)
        assert lost.wait(10)
        time.sleep(0.6)  # a whole ttl: no renewal happens after the loss
    (deletion,) = [c for c in seen.commands if c.name == "DEL"]
    on_node = [c for c in seen.commands if c.node == deletion.node]  # MONITOR order per node
    after = on_node[on_node.index(deletion) + 1 :]
    renewals = [c for c in after if c.name in ("SET", "EVALSHA")]
    assert len(renewals) == 1  # the very next renewal noticed
    assert lock.lost
    assert seen_lock == [lock]
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert outside.exists(lock.key) == 0  # the failed renewal did not recreate the key


def test_watchdog_stops_on_release(backend: Backend, prefix: str) -> None:
    lock = Lock(backend.client(), prefix, ttl=0.3, auto_renew=True)
    lock.acquire()
    time.sleep(0.25)
    lock.release()
    with backend.counter() as seen:
        time.sleep(0.5)
    assert seen.count == 0


def test_max_hold_stops_renewal(backend: Backend, prefix: str) -> None:
    lock = Lock(backend.client(), prefix, ttl=0.3, auto_renew=True, max_hold=0.5)
    lock.acquire()
    assert _wait_until(lambda: not lock.locked(), timeout=10)
    with pytest.raises(LockNotOwnedError):
        lock.release()


def _expires_untouched(client: Any, key: bytes, ttl_ms: int) -> None:
    """Poll ``key`` until it is gone (bounded): its PTTL starts within ``ttl_ms`` and never
    grows, i.e. nothing renews it and it expires within its ttl of server time."""
    last = ttl_ms
    deadline = time.monotonic() + 10 * ttl_ms / 1000
    while (pttl := client.pttl(key)) != -2:
        assert 0 <= pttl <= last, f"PTTL went from {last} to {pttl}: the key was renewed"
        last = pttl
        assert time.monotonic() < deadline, "the key did not expire"
        time.sleep(0.02)


_DROPPED = (
    "{kind} {name!r} was garbage-collected while held with auto_renew: its renewals stopped"
    " and it expires within its ttl; release it (or use `with`) before dropping the last"
    " reference"
)


def _drop(holder: list[Any]) -> None:
    holder.clear()  # the last reference
    gc.collect()


def test_dropped_lock_stops_renewing_and_expires(backend: Backend, prefix: str) -> None:
    # Regression (issue 13.7): the watchdog held the lock strongly, so a lock dropped while
    # held was renewed forever and nobody could ever take it.
    holder = [Lock(backend.client(), prefix, ttl=1, auto_renew=True)]
    assert holder[0].acquire()
    key, token = holder[0].key, holder[0].token
    assert token is not None
    outside = backend.client()
    outside.ping()
    with backend.counter() as seen:
        # Exactly one warning: a second one would be an error (filterwarnings) in a callback.
        with pytest.warns(ResourceWarning) as warned:
            _drop(holder)
        _expires_untouched(outside, key, 1000)
        assert Lock(outside, prefix, ttl=1).acquire(blocking=False)
    assert [str(w.message) for w in warned] == [_DROPPED.format(kind="Lock", name=prefix)]
    assert not [c for c in seen.commands if token in c.args]  # not one renewal after the drop


async def _expires_untouched_async(client: Any, key: bytes, ttl_ms: int) -> None:
    """`_expires_untouched` without blocking the event loop (whose task would renew)."""
    last = ttl_ms
    deadline = time.monotonic() + 10 * ttl_ms / 1000
    while (pttl := await client.pttl(key)) != -2:
        assert 0 <= pttl <= last, f"PTTL went from {last} to {pttl}: the key was renewed"
        last = pttl
        assert time.monotonic() < deadline, "the key did not expire"
        await asyncio.sleep(0.02)


async def test_dropped_async_lock_stops_renewing_and_expires(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    holder = [AsyncLock(client, prefix, ttl=1, auto_renew=True)]
    assert await holder[0].acquire()
    key, token = holder[0].key, holder[0].token
    assert token is not None
    with backend.counter() as seen:
        with pytest.warns(ResourceWarning) as warned:
            _drop(holder)
        await _expires_untouched_async(client, key, 1000)
        assert await AsyncLock(client, prefix, ttl=1).acquire(blocking=False)
    assert [str(w.message) for w in warned] == [_DROPPED.format(kind="AsyncLock", name=prefix)]
    assert not [c for c in seen.commands if token in c.args]
    await client.aclose()


def test_held_lock_in_with_still_renews(backend: Backend, prefix: str) -> None:
    # The weak reference must not let a lock that is only referenced by its `with` statement
    # be collected: the statement keeps it alive until it exits.
    rival = Lock(backend.client(), prefix, ttl=3.0)
    with Lock(backend.client(), prefix, ttl=3.0, auto_renew=True):
        gc.collect()
        # 2.5 ttls: held only by renewing. The ttl is long enough that a loaded machine renews
        # in time (1.5 s missed a renewal once, at load 15): the renewer runs every ttl / 3 s,
        # and a full collection of the suite's heap holds the GIL for a while.
        deadline = time.monotonic() + 7.5
        while time.monotonic() < deadline:
            assert rival.acquire(blocking=False) is False
            gc.collect()
            time.sleep(0.25)
    assert rival.acquire(blocking=False)
    rival.release()


async def test_held_async_lock_in_async_with_still_renews(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    rival = AsyncLock(client, prefix, ttl=3.0)
    async with AsyncLock(client, prefix, ttl=3.0, auto_renew=True):
        gc.collect()
        deadline = time.monotonic() + 7.5  # as above
        while time.monotonic() < deadline:
            assert await rival.acquire(blocking=False) is False
            gc.collect()
            await asyncio.sleep(0.25)
    assert await rival.acquire(blocking=False)
    await rival.release()
    await client.aclose()


def test_one_renewer_thread_for_all_locks(client: Any, prefix: str) -> None:
    locks = [Lock(client, f"{prefix}:{i}", ttl=0.6, auto_renew=True) for i in range(10)]
    for lock in locks:
        lock.acquire()
    time.sleep(0.5)
    renewers = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    assert len(renewers) == 1
    assert all(lock.owned() for lock in locks)
    for lock in locks:
        lock.release()


async def test_one_renewer_task_per_loop(async_client: Any, prefix: str) -> None:
    locks = [AsyncLock(async_client, f"{prefix}:{i}", ttl=0.6, auto_renew=True) for i in range(10)]
    for lock in locks:
        await lock.acquire()
    await asyncio.sleep(0.9)
    renewers = [t for t in asyncio.all_tasks() if t.get_name() == THREAD_NAME]
    assert len(renewers) == 1
    for lock in locks:
        assert await lock.owned()
        await lock.release()
    for _ in range(200):  # the renewer task ends once nothing is left to renew
        if not [t for t in asyncio.all_tasks() if t.get_name() == THREAD_NAME]:
            break
        await asyncio.sleep(0.01)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == THREAD_NAME]


async def test_async_watchdog_loss_can_cancel_holder(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    holder: list[asyncio.Task[None]] = []
    lock = AsyncLock(client, prefix, ttl=0.6, auto_renew=True, on_lost=lambda _: holder[0].cancel())

    async def protected_work() -> None:
        await lock.acquire()
        await client.delete(lock.key)  # someone breaks the lock
        await asyncio.sleep(30)

    holder.append(asyncio.create_task(protected_work()))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(holder[0], 20)
    assert lock.lost
    with pytest.raises(LockNotOwnedError):
        await lock.release()
    await client.aclose()


async def test_async_on_lost_coroutine_is_awaited(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    called = asyncio.Event()

    async def on_lost(lost_lock: AsyncLock) -> None:
        await asyncio.sleep(0)
        called.set()

    lock = AsyncLock(client, prefix, ttl=0.6, auto_renew=True, on_lost=on_lost)
    assert await lock.acquire()
    await client.delete(lock.key)
    await asyncio.wait_for(called.wait(), 20)
    assert lock.lost
    await client.aclose()


def test_works_with_decode_responses(backend: Backend, prefix: str) -> None:
    client = backend.client(decode_responses=True)
    lock = Lock(client, prefix, ttl=5)
    assert lock.acquire()
    assert lock.owned()
    assert isinstance(lock.fence, int)
    lock.extend()
    store = FencedStore(client, prefix)
    store.write(lock.fence, "f", "v")
    assert store.read("f") == "v"
    assert store.highest() == lock.fence
    lock.release()
    assert not lock.locked()
