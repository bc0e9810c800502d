"""Cache / AsyncCache write and bulk operations on real servers: add, incr, touch, clear, *_many.

Exact command counts per operation (MONITOR), the namespace generation behind clear(), the
near cache staying correct under every write, fail_open with coalesced logging, bad input.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_patterns
from redis_patterns import (
    FOREVER,
    AsyncCache,
    BackendError,
    Cache,
    CacheValueError,
    ConfigurationError,
    LockTimeoutError,
)
from redis_patterns._logging import reset as reset_coalesced
from redis_patterns.testing.pytest_plugin import Backend


def _same_bucket(count: int, start: str = "k") -> list[str]:
    """Keys whose entries share one hash tag on a cluster (and so one script call)."""
    found: dict[int, list[str]] = {}
    i = 0
    while True:
        key = f"{start}{i}"
        bucket = found.setdefault(zlib.crc32(key.encode()) % 1024, [])
        bucket.append(key)
        if len(bucket) == count:
            return bucket
        i += 1


def _warm(cache: Cache, keys: list[str]) -> None:
    """Load every script once on the nodes owning ``keys`` (a cluster caches scripts per node)."""
    cache.set_many(dict.fromkeys(keys, 0))
    cache.get_many(keys)
    cache.delete_many(keys)
    for key in keys:
        cache.add(key, 0)
        cache.incr(key)
        cache.touch(key)
        cache.exists(key)
        cache.get_or_load(key, lambda: 1)
    cache.delete_many(keys)


# --- semantics -------------------------------------------------------------------------------


def test_add_stores_only_when_absent(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"
    cache.set("short", 1, ttl=0.05)
    time.sleep(0.15)
    assert cache.add("short", 2) is True  # an expired (stale) value counts as absent
    assert cache.get("short") == 2
    cache.clear()
    assert cache.add("k", "after clear") is True  # a cleared value counts as absent


def test_incr_decr_are_atomic_and_keep_the_ttl(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 100, jitter=0, stampede=None)
    cache.set("n", 41)
    before = client.pttl(cache.key_of("n"))
    assert cache.incr("n") == 42
    assert cache.incr("n", 10) == 52
    assert cache.decr("n", 2) == 50
    assert cache.incr("n", -50) == 0
    assert cache.get("n") == 0
    assert client.pttl(cache.key_of("n")) <= before  # kept, not renewed
    assert cache.incr("fresh", 5) == 5  # created holding delta, with the cache's ttl
    assert 90_000 < client.pttl(cache.key_of("fresh")) <= 100_000
    assert cache.incr("absent", create=False) is None
    assert cache.get("absent") is None
    threads = [
        threading.Thread(target=lambda: [cache.incr("c") for _ in range(50)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("c") == 200


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_incr_works_with_every_serializer(client: Any, prefix: str, serializer: str) -> None:
    cache = Cache(client, prefix + serializer, 60, serializer=serializer, secret="s" * 16)
    cache.set("n", 7)
    assert cache.incr("n") == 8
    assert cache.get("n") == 8
    assert cache.get_many(["n"]) == [8]
    for value in ("7", 7.0, None, True, [7]):
        cache.set("bad", value)
        with pytest.raises(CacheValueError, match="not hold an integer"):
            cache.incr("bad")
        assert cache.get("bad") == value  # unchanged


def test_incr_of_a_non_integer_or_out_of_range_is_a_library_error(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)
    cache.set("big", 2**53 - 1)
    with pytest.raises(CacheValueError, match="2\\*\\*53"):
        cache.incr("big")
    assert cache.get("big") == 2**53 - 1
    assert cache.decr("big") == 2**53 - 2
    cache.set("huge", 2**60)  # stored fine; only arithmetic on it is refused
    with pytest.raises(CacheValueError):
        cache.incr("huge")
    assert isinstance(CacheValueError("x"), TypeError)


def test_touch_sets_a_new_ttl(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 100, jitter=0, stampede=None)
    cache.set("k", "v", ttl=1)
    assert cache.touch("k", 50) is True
    assert 45_000 < client.pttl(cache.key_of("k")) <= 50_000
    assert cache.touch("k", FOREVER) is True
    assert client.pttl(cache.key_of("k")) == -1
    assert cache.get("k") == "v"
    assert cache.touch("missing") is False
    assert not client.exists(cache.key_of("missing"))


def test_forever_entries_have_no_expiry(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 60)
    cache.set("f", {"a": 1}, ttl=FOREVER)
    cache.set_many({"g": 1}, ttl=FOREVER)
    assert cache.add("h", 2, ttl=FOREVER) is True
    for key in ("f", "g", "h"):
        assert client.pttl(cache.key_of(key)) == -1
    assert cache.get_many(["f", "g", "h"]) == [{"a": 1}, 1, 2]
    assert cache.incr("g") == 2
    assert client.pttl(cache.key_of("g")) == -1


def test_get_many_set_many_delete_many(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    keys = [f"k{i}" for i in range(1500)]  # several script batches and, on a cluster, nodes
    cache.set_many({k: i for i, k in enumerate(keys)})
    asked: list[str | bytes] = ["k3", "missing", "k1499", "k3", b"k0"]
    assert cache.get_many(asked, default="-") == [3, "-", 1499, 3, 0]
    assert cache.get_many(keys) == list(range(1500))
    assert cache.get_many([]) == []
    cache.set_many([("p", None), ("q", [1])])  # pairs work too; None is a stored value
    assert cache.get_many(["p", "q"], default="-") == [None, [1]]
    assert cache.delete_many(["k1", "k2", "missing", "k1"]) == 2
    assert cache.get_many(["k1", "k2", "k4"]) == [None, None, 4]
    assert cache.delete_many(keys) == 1498
    assert cache.delete_many([]) == 0


def test_get_or_load_many_loads_only_the_misses(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    cache.set_many({"a": "A", "b": "B"})
    calls: list[list[str]] = []

    def load(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        return {k: k.upper() for k in keys if k != "gone"}

    assert cache.get_or_load_many(["a", "x", "b", "gone", "y", "x"], load) == [
        "A",
        "X",
        "B",
        None,
        "Y",
        "X",
    ]
    assert [sorted(c) for c in calls] == [["gone", "x", "y"]]
    assert cache.get_many(["x", "y", "gone"], default="-") == ["X", "Y", "-"]
    locks = [cache._core.lock_key(cache.key_of(k)) for k in ("x", "y", "gone")]
    assert not any(backend.client().exists(lock) for lock in locks)
    assert cache.get_or_load_many(["x", "gone"], load) == ["X", None]
    assert sorted(calls[-1]) == ["gone"]  # None is not cached without negative_ttl


def test_get_or_load_many_one_loader_per_key_across_threads(backend: Backend, prefix: str) -> None:
    loads: list[str] = []
    guard = threading.Lock()

    def slow(keys: list[str]) -> dict[str, int]:
        with guard:
            loads.extend(keys)
        time.sleep(0.2)
        return {k: int(k[1:]) for k in keys}

    keys = [f"k{i}" for i in range(20)]
    results: list[list[Any]] = []

    def reader(offset: int) -> None:
        cache = Cache(backend.client(), prefix, 60)  # separate caches: the lock is in Redis
        results.append(cache.get_or_load_many(keys[offset:] + keys[:offset], slow))

    threads = [threading.Thread(target=reader, args=(i * 5,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(loads) == sorted(keys)  # every key loaded exactly once
    assert all(sorted(r) == list(range(20)) for r in results)


def test_get_or_load_many_waiter_times_out(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60, wait_timeout=0.2)
    client.set(cache._core.lock_key(cache.key_of("busy")), "someone-else", px=5000)
    with pytest.raises(LockTimeoutError):
        cache.get_or_load_many(["free", "busy"], lambda keys: dict.fromkeys(keys, 1))
    assert cache.get("free") == 1  # the key it could load was stored


def test_clear_empties_the_namespace_only(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 60)
    other = Cache(client, prefix + "other", 60)
    cache.set_many({f"k{i}": i for i in range(300)})
    cache.set("f", 1, ttl=FOREVER)
    other.set("k1", "kept")
    cache.clear()
    assert cache.get_many([f"k{i}" for i in range(300)] + ["f"]) == [None] * 301
    assert not cache.exists("k1")
    assert cache.delete("k2") is False  # a cleared entry is no live value
    assert cache.touch("k3") is False
    assert cache.incr("k4", create=False) is None
    assert other.get("k1") == "kept"
    assert not client.exists(cache.key_of("k1"))  # read after the clear: deleted at once
    cache.set("k5", "new")
    assert cache.get("k5") == "new"
    cache.clear()
    cache.clear()
    assert cache.get("k5") is None


def test_clear_beats_a_load_that_started_earlier(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)

    def read_then_cleared() -> str:
        cache.clear()
        return "old"

    assert cache.get_or_load("k", read_then_cleared) == "old"
    assert cache.get("k") is None

    def many_then_cleared(keys: list[str]) -> dict[str, str]:
        cache.clear()
        return dict.fromkeys(keys, "old")

    assert cache.get_or_load_many(["a", "b"], many_then_cleared) == ["old", "old"]
    assert cache.get_many(["a", "b"]) == [None, None]


def test_cached_function_set_and_refresh(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    source = {"n": 1}

    @cache.cached(key="user:{user_id}")
    def user(user_id: int) -> dict[str, int] | None:
        return {"id": user_id, "n": source["n"]} if user_id > 0 else None

    assert user(5) == {"id": 5, "n": 1}
    user.set({"id": 5, "n": 99}, 5)
    assert user(5) == {"id": 5, "n": 99}
    assert cache.get("user:5") == {"id": 5, "n": 99}
    source["n"] = 2
    assert user.refresh(5) == {"id": 5, "n": 2}
    assert user(user_id=5) == {"id": 5, "n": 2}
    cache.set("user:-1", "junk")
    assert user.refresh(-1) is None
    assert cache.exists("user:-1") is False  # None is not cached: refresh deleted the entry


# --- exact command counts --------------------------------------------------------------------


def test_each_operation_is_one_command(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    keys = _same_bucket(5)
    _warm(cache, keys)
    cache.set_many({k: i for i, k in enumerate(keys)})
    # Plain reads on a standalone server keep values out of Lua (issue 16): the entries and
    # their generation (MGET) and the server's clock (TIME) pipelined; `exists` reads only the
    # header (GETRANGE). A cluster runs the read script (TIME names no key to route by).
    many = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME"]
    probe = ["EVALSHA"] if backend.is_cluster else ["GET", "GETRANGE", "TIME"]
    cases: list[tuple[str, Any, list[str]]] = [
        ("get_many", lambda: cache.get_many(keys), many),
        ("set_many", lambda: cache.set_many({k: 1 for k in keys}), ["EVALSHA"]),
        ("add", lambda: cache.add(keys[0], 2), ["EVALSHA"]),
        ("incr", lambda: cache.incr(keys[0]), ["EVALSHA"]),
        ("decr", lambda: cache.decr(keys[0]), ["EVALSHA"]),
        ("touch", lambda: cache.touch(keys[0], 30), ["EVALSHA"]),
        ("exists", lambda: cache.exists(keys[0]), probe),
        ("get_or_load_many hit", lambda: cache.get_or_load_many(keys, dict), many),
        ("delete_many", lambda: cache.delete_many(keys), ["EVALSHA"]),
    ]
    for name, call, expected in cases:
        with backend.counter() as seen:
            call()
        assert seen.names == expected, name
    with backend.counter() as seen:  # misses: the read taking the locks, then the store
        assert cache.get_or_load_many(keys, lambda ks: dict.fromkeys(ks, 7)) == [7] * 5
    judged = [] if backend.is_cluster else many  # standalone: the lean read comes first
    assert seen.names == [*judged, "EVALSHA", "EVALSHA"]


def test_reads_without_a_stale_window_are_one_mget(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    fast = Cache(client, prefix, 60, stampede=None)  # no stale window: present means fresh
    assert fast._core.fast_reads
    keys = _same_bucket(3, "f")
    fast.set_many({k: i for i, k in enumerate(keys)})
    fast.get(keys[0])
    with backend.counter() as seen:
        assert fast.get(keys[0]) == 0
        assert fast.get("missing", "d") == "d"
        assert fast.get_many(keys) == [0, 1, 2]
    assert seen.names == ["MGET", "MGET", "MGET"]
    # An entry written with a stale window needs the server's time: one more trip, the read
    # script on a cluster, MGET + TIME on a standalone server.
    slow = Cache(client, prefix, 60, stampede="lock", stale_ttl=30, jitter=0)
    slow.set("s", "v", ttl=0.05)
    slow.get_many(["s"])  # the scripts are cached on the node owning "s"
    assert fast.get("s") == "v"
    time.sleep(0.15)  # past its soft expiry, inside its stale window
    with backend.counter() as seen:
        assert fast.get("s") is None  # stale: not a fresh value
        assert fast.get_many(["s"]) == [None]
    judged = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME"]
    assert seen.names == ["MGET", *judged, "MGET", *judged]
    fast.clear()
    with backend.counter() as seen:
        assert fast.get(keys[1]) is None  # the generation moved: a miss without the script
    assert seen.names == ["MGET"]
    assert fast.get_many(keys) == [None] * 3
    fast.set(keys[0], "forever", ttl=FOREVER)
    assert fast.get(keys[0]) == "forever"


def test_lean_reads_judge_as_the_script_does(backend: Backend, prefix: str) -> None:
    """get_many and exists without the script (standalone) give the script's answers: a stale
    entry, an entry of an older generation and a malformed one are misses; a 1 MB value is
    probed by its header (the GETRANGE reply is the first 128 bytes, never the value)."""
    client: Any = backend.client()
    cache = Cache(client, prefix, 60, stampede="lock", stale_ttl=30, jitter=0)
    big = "x" * 1_000_000
    cache.set_many({"fresh": 1, "big": big})
    cache.set("stale", 2, ttl=0.05)
    time.sleep(0.15)  # "stale" is past its soft expiry, inside its stale window
    client.set(cache.key_of("junk"), b"not an entry")
    with backend.counter() as seen:
        assert cache.get_many(["fresh", "stale", "junk", "big", "none"]) == [
            1,
            None,
            None,
            big,
            None,
        ]
        assert [cache.exists(k) for k in ("fresh", "stale", "junk", "big", "none")] == [
            True,
            False,
            False,
            True,
            False,
        ]
    if not backend.is_cluster:
        assert "EVALSHA" not in seen.names
        assert seen.names.count("GETRANGE") == 5
    cache.clear()  # a new generation: every entry written before is gone for both
    assert cache.get_many(["fresh", "big"]) == [None, None]
    assert cache.exists("fresh") is False
    assert cache.get_or_load("big", lambda: "reloaded") == "reloaded"
    assert cache.exists("big") is True


@pytest.mark.parametrize("stampede", ["xfetch", "lock"])
def test_get_or_load_many_serves_stale_and_refreshes_early(
    backend: Backend, prefix: str, stampede: Any
) -> None:
    """The bulk read judges fresh hits without the script (standalone) but still hands stale
    entries, and with xfetch early-expiring ones, to the read script: served at once, their
    locks taken, refreshed in the background, counted as the single-key path counts them."""
    cache = Cache(backend.client(), prefix, 60, stampede=stampede, stale_ttl=30, jitter=0, beta=1e9)
    keys = _same_bucket(3, "r")
    version = {"n": 1}

    def load(ks: list[str]) -> dict[str, int]:
        time.sleep(0.02)  # a measurable load time: xfetch's early refresh scales with it
        return dict.fromkeys(ks, version["n"])

    assert cache.get_or_load_many(keys, load) == [1, 1, 1]
    version["n"] = 2
    if stampede == "lock":  # past the soft expiry (0.05 s), inside the stale window
        cache.set_many(dict.fromkeys(keys, 1), ttl=0.05)
        time.sleep(0.15)
    # xfetch with beta 1e9: a 20 ms load makes every fresh entry expire early
    assert cache.get_or_load_many(keys, load) == [1, 1, 1]  # served at once, not waited for
    deadline = time.monotonic() + 10
    while cache.get_many(keys) != [2, 2, 2] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.get_many(keys) == [2, 2, 2]  # the background refresh stored the new values
    stats = cache.stats
    if stampede == "xfetch":
        assert stats["early_refreshes"] == 3
    else:
        assert stats["stale_served"] == 3
        assert stats["early_refreshes"] == 0


def test_clear_costs_the_same_whatever_the_number_of_keys(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    cache.clear()
    counts = []
    for size in (10, 2000):
        cache.set_many({f"k{i}": i for i in range(size)})
        with backend.counter() as seen:
            cache.clear()
        counts.append(sorted(seen.names))
    assert counts[0] == counts[1]
    if backend.is_cluster:  # every bucket's counter, pipelined per node, then one PUBLISH
        assert counts[0].count("INCR") == 1024
        assert counts[0].count("PUBLISH") == 1
        assert len(counts[0]) == 1025
    else:
        assert counts[0] == ["EVALSHA"]


def test_get_many_sends_one_pipeline_per_node_on_a_cluster(backend: Backend, prefix: str) -> None:
    if not backend.is_cluster:
        pytest.skip("standalone: covered by test_each_operation_is_one_command")
    cache = Cache(backend.client(), prefix, 60)
    keys = [f"k{i}" for i in range(40)]
    _warm(cache, keys)
    cache.set_many(dict.fromkeys(keys, 1))
    buckets = {zlib.crc32(k.encode()) % 1024 for k in keys}
    with backend.counter() as seen:
        assert cache.get_many(keys) == [1] * 40
    assert seen.names == ["EVALSHA"] * len(buckets)  # one script per bucket...
    per_node: dict[str, set[str]] = {}
    for command in seen.commands:
        per_node.setdefault(command.node, set()).add(command.client)
    assert len(per_node) == 3
    assert all(len(clients) == 1 for clients in per_node.values())  # ...one connection per node


async def test_async_operations_and_counts(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60, serializer="msgpack")
    keys = _same_bucket(3, "a")
    await cache.set_many({k: i for i, k in enumerate(keys)})
    assert await cache.get_many(keys) == [0, 1, 2]
    assert await cache.add(keys[0], 5) is False
    assert await cache.incr(keys[1], 10) == 11
    assert await cache.decr(keys[1]) == 10
    assert await cache.touch(keys[2], 30) is True
    assert await cache.exists(keys[2]) is True

    async def load(ks: list[str]) -> dict[str, str]:
        return {k: k * 2 for k in ks}

    assert await cache.get_or_load_many([*keys, "zz"], load) == [0, 10, 2, "zzzz"]
    many = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME"]
    probe = ["EVALSHA"] if backend.is_cluster else ["GET", "GETRANGE", "TIME"]
    calls: list[tuple[str, Callable[[], Awaitable[Any]], list[str]]] = [
        ("get_many", lambda: cache.get_many(keys), many),
        ("set_many", lambda: cache.set_many(dict.fromkeys(keys, 1)), ["EVALSHA"]),
        ("incr", lambda: cache.incr(keys[0]), ["EVALSHA"]),
        ("add", lambda: cache.add(keys[0], 1), ["EVALSHA"]),
        ("touch", lambda: cache.touch(keys[0], 30), ["EVALSHA"]),
        ("exists", lambda: cache.exists(keys[0]), probe),
        ("get_or_load_many hit", lambda: cache.get_or_load_many(keys, load), many),
        ("delete_many", lambda: cache.delete_many(keys), ["EVALSHA"]),
    ]
    for name, call, expected in calls:
        await call()  # warm the node's script cache
        with backend.counter() as seen:
            await call()
        assert seen.names == expected, name

    @cache.cached()
    async def square(x: int) -> int:
        return x * x

    assert await square(3) == 9
    await square.set(10, 3)
    assert await square(3) == 10
    assert await square.refresh(3) == 9
    await cache.clear()
    assert await cache.get_many(keys) == [None] * 3
    assert square.key(3) != ""
    await client.aclose()


# --- near cache under every write ------------------------------------------------------------


def _until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_near_cache_is_invalidated_by_every_write(backend: Backend, prefix: str) -> None:
    reader = Cache(backend.client(), prefix, 60, local=100)
    writer = Cache(backend.client(), prefix, 60)
    reader.get("warm-up")
    assert _until(lambda: reader.local_ready)
    writes: list[tuple[str, Any, Any]] = [
        ("incr", lambda: writer.incr("k"), 2),
        ("set_many", lambda: writer.set_many({"k": 10}), 10),
        ("delete_many", lambda: writer.delete_many(["k"]), None),
        ("add", lambda: writer.add("k", 20), 20),
        ("clear", writer.clear, None),
    ]
    writer.set("k", 1)
    for name, write, expected in writes:
        assert _until(lambda n=name: reader.get("k") is not None or n == "add"), name
        reader.get("k")  # now in the near cache
        write()
        assert _until(lambda e=expected: reader.get("k") == e), name
    # The writer itself never serves its own old value (no wait at all).
    own = Cache(backend.client(), prefix + "own", 60, local=100)
    own.get("x")
    assert _until(lambda: own.local_ready)
    own.set("x", 1)
    assert own.get("x") == 1
    assert own.incr("x") == 2
    assert own.get("x") == 2
    own.set_many({"x": 3})
    assert own.get("x") == 3
    assert own.get_many(["x"]) == [3]
    own.clear()
    assert own.get("x") is None
    assert own.get_many(["x"]) == [None]
    reader.close()
    own.close()


# --- fail open -------------------------------------------------------------------------------


def _dead_client() -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )


def test_fail_open_serves_the_loader_and_logs_once(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    reset_coalesced()
    cache = Cache(_dead_client(), prefix, 60, fail_open=True)
    calls: list[int] = []

    @cache.cached()
    def compute(x: int) -> int:
        calls.append(x)
        return x + 1

    with caplog.at_level(logging.WARNING, logger="redis_patterns.cache"):
        for i in range(30):
            assert compute(i) == i + 1
            assert cache.get("k", default="d") == "d"
            assert cache.get_many(["a", "b"]) == [None, None]
            assert cache.exists("k") is False
            assert cache.get_or_load_many(["a", "b"], lambda ks: dict.fromkeys(ks, 0)) == [0, 0]
    assert calls == list(range(30))
    lines = [r for r in caplog.records if "fail_open" in r.getMessage()]
    assert len(lines) == 1  # one line for 150 failures (the count follows after the interval)
    assert cache.stats["backend_errors"] == 150
    for write in (lambda: cache.set("k", 1), lambda: cache.delete("k"), cache.clear):
        with pytest.raises(BackendError):
            write()  # a lost write is never silent


@pytest.mark.parametrize("paused", [False, True], ids=["stopped", "paused"])
def test_fail_open_when_the_server_goes_away(
    server_factory: Any, prefix: str, caplog: pytest.LogCaptureFixture, paused: bool
) -> None:
    reset_coalesced()
    server = server_factory()
    client = redis_patterns.connect(server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    cache = Cache(client, prefix, 60, fail_open=True, local=10)
    loads: list[int] = []

    @cache.cached()
    def page(n: int) -> str:
        loads.append(n)
        return f"page {n}"

    assert page(1) == "page 1"
    assert page(1) == "page 1"  # cached
    assert loads == [1]
    if paused:
        server.pause()  # a hung server: every call times out (outcome unknown)
    else:
        server.stop()  # a dead one: connections refused
    try:
        with caplog.at_level(logging.WARNING, logger="redis_patterns"):
            for i in range(10):
                assert page(100 + i) == f"page {100 + i}"  # answered by the loader
                assert cache.get_many(["a"]) == [None]
        assert loads == [1, *range(100, 110)]
        lines = [r for r in caplog.records if "fail_open=True" in r.getMessage()]
        assert len(lines) == 1  # bounded: one line, the count follows after the interval
        assert cache.stats["backend_errors"] == 20
    finally:
        if paused:
            server.resume()
        cache.close()


def test_fail_open_off_raises(prefix: str) -> None:
    cache = Cache(_dead_client(), prefix, 60)
    with pytest.raises(BackendError):
        cache.get_or_load("k", lambda: 1)
    with pytest.raises(BackendError):
        cache.get_many(["k"])


async def test_async_fail_open(prefix: str) -> None:
    reset_coalesced()
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=AsyncRetry(NoBackoff(), 0)
    )
    cache = AsyncCache(client, prefix, 60, fail_open=True)

    async def load() -> str:
        return "from the loader"

    assert await cache.get_or_load("k", load) == "from the loader"
    assert await cache.get("k", "d") == "d"
    await client.aclose()


# --- bad input (the before-any-I/O cases are in test_cache_api.test_bad_call_before_any_io) ---


def test_loader_returning_no_mapping_is_an_error_and_frees_the_locks(
    client: Any, prefix: str
) -> None:
    cache = Cache(client, prefix, 60)
    with pytest.raises(ConfigurationError, match="mapping"):
        cache.get_or_load_many(["a"], lambda ks: ["not", "a", "mapping"])  # type: ignore[arg-type,return-value]
    assert not client.exists(cache._core.lock_key(cache.key_of("a")))


def test_async_loader_refused_by_the_sync_cache(client: Any, prefix: str) -> None:
    async def load(keys: list[str]) -> dict[str, int]:
        return {}

    with pytest.raises(ConfigurationError, match="async"):
        Cache(client, prefix, 60).get_or_load_many(["a"], load)  # type: ignore[arg-type]
    asyncio.run(asyncio.sleep(0))
