"""Cache / AsyncCache on real servers: semantics, one command per hit, bad input, serializers."""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import redis.cluster

from redis_patterns import (
    AsyncCache,
    BackendError,
    Cache,
    ConfigurationError,
    EmbeddedServer,
    connect,
)
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.pytest_plugin import Backend


def test_set_get_delete_round_trip(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)
    assert cache.get("a") is None
    assert cache.get("a", default="d") == "d"
    cache.set("a", {"x": [1, 2, "three"], "y": None})
    assert cache.get("a") == {"x": [1, 2, "three"], "y": None}
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    assert cache.get("a") is None


def test_entry_layout_and_hard_expiry(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 100, jitter=0.0, stale_ttl=50)
    cache.set("k", [1])
    raw = client.get(cache.key_of("k"))
    if isinstance(client, redis.cluster.RedisCluster):
        bucket = zlib.crc32(b"k") % 1024  # one of the namespace's 1024 hash-tag buckets
        assert cache.key_of("k") == f"{{cache:{prefix}:{bucket}}}:v:k".encode()
    else:
        assert cache.key_of("k") == f"{{cache:{prefix}:k}}".encode()
    magic, tag, soft, delta, generation, payload = raw.split(b":", 5)
    assert (magic, tag, delta, generation, payload) == (b"rp2", b"json", b"0", b"0", b"[1]")
    seconds, micros = client.time()
    assert int(soft) - (seconds * 1000 + micros // 1000) == pytest.approx(100_000, abs=5_000)
    assert client.pttl(cache.key_of("k")) == pytest.approx(150_000, abs=5_000)


def test_jitter_only_shortens_and_spreads(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 100, jitter=0.2, stampede=None)
    for i in range(30):
        cache.set(f"k{i}", i)
    ttls = [client.pttl(cache.key_of(f"k{i}")) for i in range(30)]
    assert all(79_000 <= t <= 100_000 for t in ttls), ttls
    assert len({t // 1000 for t in ttls}) > 3  # spread, not all expiring together


def test_per_call_ttl_and_expiry(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60, stampede=None, jitter=0)
    cache.set("short", 1, ttl=0.05)
    assert client.pttl(cache.key_of("short")) <= 50
    import time

    time.sleep(0.2)
    assert cache.get("short") is None


def test_get_or_load_loads_once_then_hits(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)
    calls: list[int] = []

    def loader() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert cache.get_or_load("k", loader) == {"n": 1}
    assert cache.get_or_load("k", loader) == {"n": 1}
    assert len(calls) == 1
    assert not client.exists(
        cache._core.lock_key(cache.key_of("k"))
    )  # the loader released its lock


def test_none_not_cached_unless_negative_ttl(client: Any, prefix: str) -> None:
    calls: list[int] = []

    def loader() -> None:
        calls.append(1)

    plain = Cache(client, prefix + "a", 60)
    assert plain.get_or_load("k", loader) is None
    assert plain.get_or_load("k", loader) is None
    assert len(calls) == 2
    negative = Cache(client, prefix + "b", 60, negative_ttl=30, jitter=0)
    calls.clear()
    assert negative.get_or_load("k", loader) is None
    assert negative.get_or_load("k", loader) is None
    assert len(calls) == 1
    assert 0 < client.pttl(negative.key_of("k")) <= 45_000


def test_loader_error_propagates_and_backs_off(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60, error_backoff=5, wait_timeout=0.3)

    def broken() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        cache.get_or_load("k", broken)
    # The failed loader's lock is kept for the backoff: nobody hammers the failing store.
    assert 0 < client.pttl(cache._core.lock_key(cache.key_of("k"))) <= 5000
    assert cache.stats["load_errors"] == 1


def test_set_wins_over_a_load_that_started_earlier(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)

    def slow_old_read() -> str:
        cache.set("k", "new")  # a writer updates the DB and the cache while we were loading
        return "old"

    assert cache.get_or_load("k", slow_old_read) == "old"  # the caller gets what it loaded
    assert cache.get("k") == "new"  # but the older read did not overwrite the newer write


def test_delete_wins_over_a_load_that_started_earlier(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)

    def read_then_invalidated() -> str:
        cache.delete("k")
        return "old"

    assert cache.get_or_load("k", read_then_invalidated) == "old"
    assert cache.get("k") is None


# --- one command per operation ---------------------------------------------------------------


def test_one_command_per_hit_set_delete(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    # A hit's value does not pass through Lua (issue 16): the entry and its generation (MGET)
    # and the server's clock (TIME), pipelined; on a cluster the read script (TIME could be
    # answered by another node than the entry's).
    hit = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME"]
    # Warm the script cache on the node owning "k" (a cluster caches scripts per node).
    cache.delete("k")
    cache.get_or_load("k", lambda: 1)
    with backend.counter() as seen:
        assert cache.get("k") == 1
    assert seen.names == hit
    with backend.counter() as seen:
        cache.set("k", 2)
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert cache.get_or_load("k", lambda: 3) == 2
    assert seen.names == hit
    cache.get("missing")  # its node may be another one, with a cold script cache
    with backend.counter() as seen:
        assert cache.get("missing") is None
    assert seen.names == hit
    with backend.counter() as seen:
        cache.delete("k")
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert cache.get_or_load("k", lambda: 4) == 4  # a miss: read+lock, then store+unlock
    miss = ["EVALSHA", "EVALSHA"] if backend.is_cluster else [*hit, "EVALSHA", "EVALSHA"]
    assert seen.names == miss


def test_hit_is_one_round_trip(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    """The hit's MGET and TIME go out together: one request forwarded by a proxy."""
    proxy = fault_proxy(valkey_server)
    cache = Cache(connect(proxy.url), prefix, 60)
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}  # the connection is open
    reads: list[Callable[[], Any]] = [lambda: cache.get("k"), lambda: cache.get_or_load("k", dict)]
    for read in reads:
        before = proxy.stats.forwarded_requests
        assert read() == {"v": 1}
        assert proxy.stats.forwarded_requests - before == 1


async def test_async_one_command_per_hit(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)
    hit = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME"]

    async def loader() -> int:
        return 7

    await cache.get_or_load("k", loader)
    await cache.get("k")
    with backend.counter() as seen:
        assert await cache.get_or_load("k", loader) == 7
    assert seen.names == hit
    with backend.counter() as seen:
        assert await cache.get("k") == 7
    assert seen.names == hit
    with backend.counter() as seen:
        await cache.set("k", 8)
    assert seen.names == ["EVALSHA"]
    await client.aclose()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": float("nan")},
        {"ttl": True},
        {"ttl": 0.0001},
        {"jitter": -0.1},
        {"jitter": 1.0},
        {"jitter": "0.1"},
        {"stampede": "mutex"},
        {"beta": 0},
        {"beta": -1.0},
        {"beta": float("inf")},
        {"serializer": "pickle"},
        {"serializer": "pickle", "secret": b"short"},
        {"serializer": "yaml"},
        {"namespace": "a:b"},
        {"namespace": "{x}"},
        {"namespace": ""},
        {"local": 0},
        {"local": 1.5},
        {"lock_ttl": 0},
        {"stale_ttl": -1},
        {"max_value_bytes": 0},
    ],
)
def test_bad_configuration_before_any_io(backend: Backend, kwargs: dict[str, Any]) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        Cache(client, **kwargs)
    assert seen.count == 0


@pytest.mark.parametrize(
    ("call"),
    [
        lambda c: c.get(""),
        lambda c: c.get(None),
        lambda c: c.get(42),
        lambda c: c.get("a{b}"),
        lambda c: c.get("x" * 2000),
        lambda c: c.set("k", {1, 2}),
        lambda c: c.set("k", object()),
        lambda c: c.set("k", 1, ttl=0),
        lambda c: c.set("k", "x" * 2000),
        lambda c: c.get_or_load("k", "not callable"),
        lambda c: c.get_or_load("k", lambda: 1, ttl=-5),
        lambda c: c.get_or_load("k", _async_loader),
        lambda c: c.cached(ttl=0),
        lambda c: c.cached()(_async_loader),
        lambda c: c.warm({"k": 1}, batch_size=0),
        lambda c: c.warm(["k"], loader=_async_loader),
        lambda c: c.set_many({"a": 1, "b": {1, 2}}),
        lambda c: c.set_many({"a": 1, "b": "x" * 2000}),
        lambda c: c.set_many({"a": 1, "x" * 2000: 1}),
        lambda c: c.set_many([("a", 1), "b"]),
        lambda c: c.get_many(["a", "x" * 2000]),
        lambda c: c.get_many("abc"),
        lambda c: c.get_many(["a", None]),
        lambda c: c.delete_many(["a", "{b}"]),
        lambda c: c.add("k", object()),
        lambda c: c.incr("k", 1.5),
        lambda c: c.incr("k", True),
        lambda c: c.incr("k", 2**53),
        lambda c: c.incr("x" * 2000),
        lambda c: c.touch("k", 0),
        lambda c: c.touch("k", -1),
        lambda c: c.get_or_load_many(["a"], "not callable"),
        lambda c: c.get_or_load_many(["a"], lambda ks: {}, ttl=0),
        lambda c: c.get_or_load_many(["a", ""], lambda ks: {}),
    ],
)
def test_bad_call_before_any_io(backend: Backend, prefix: str, call: Any) -> None:
    client = backend.client()
    cache = Cache(client, prefix, 60, max_value_bytes=1000)
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        call(cache)
    assert seen.count == 0


async def _async_loader() -> int:
    return 1


def _sync_loader() -> int:
    return 1


async def test_async_cache_refuses_sync_loader_before_io(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)
    await client.ping()
    with backend.counter() as seen:
        with pytest.raises(ConfigurationError, match="not an async function"):
            await cache.get_or_load("k", _sync_loader)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="not an async function"):
            cache.cached()(_sync_loader)  # type: ignore[arg-type]
    assert seen.count == 0
    await client.aclose()


def test_unserializable_value_names_the_type(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)
    with pytest.raises(ConfigurationError, match="set"):
        cache.set("k", {1, 2, 3})

    class Thing:
        pass

    with pytest.raises(ConfigurationError, match="Thing"):
        cache.get_or_load("k", Thing)
    assert not client.exists(cache._core.lock_key(cache.key_of("k")))  # the lock was released


def test_sync_client_refused_by_async_cache(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncCache(backend.client(), "n")  # type: ignore[arg-type]


# --- serializers -----------------------------------------------------------------------------


def test_msgpack_and_pickle_round_trip(client: Any, prefix: str) -> None:
    packed = Cache(client, prefix + "m", 60, serializer="msgpack")
    packed.set("k", {"b": b"\x00\x01", "n": [1, 2.5]})
    assert packed.get("k") == {"b": b"\x00\x01", "n": [1, 2.5]}
    pickled = Cache(client, prefix + "p", 60, serializer="pickle", secret=b"s" * 32)
    pickled.set("k", {1, 2, 3})
    assert pickled.get("k") == {1, 2, 3}
    assert client.get(pickled.key_of("k")).startswith(b"rp2:pickle-hmac:")


def test_other_serializers_entries_are_detected_not_misdecoded(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    json_cache = Cache(client, prefix, 60)
    packed = Cache(client, prefix, 60, serializer="msgpack")
    packed.set("k", "hello")
    with caplog.at_level(logging.WARNING, logger="redis_patterns.cache"):
        assert json_cache.get("k") is None
    assert "serializer 'msgpack'" in caplog.text
    assert json_cache.get_or_load("k", lambda: "fresh") == "fresh"  # replaced by a loader
    assert packed.get("k") is None


def test_cached_decorator_keys_are_stable_and_collision_free(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)
    calls: list[tuple[Any, Any]] = []

    @cache.cached()
    def f(a: Any, b: Any = 2) -> list[Any]:
        calls.append((a, b))
        return [a, b]

    assert f(1) == [1, 2]
    assert f(1, 2) == [1, 2]
    assert f(a=1, b=2) == [1, 2]
    assert len(calls) == 1
    distinct = [1, "1", 1.0, True, (1,), [1], None, b"1", {"a": 1}, {1}, "a{b}", "a:b", ("1",)]
    keys = {f.key(value) for value in distinct}
    assert len(keys) == len(distinct)
    assert f.key(1) == f.key(1, 2) == f.key(b=2, a=1)
    assert f.key({"x": 1, "y": 2}) == f.key({"y": 2, "x": 1})
    assert f.invalidate(1) is True
    assert f(1) == [1, 2]
    assert len(calls) == 2


def test_cached_key_template_and_methods(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)

    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @cache.cached(key="user:{user_id}")
        def user(self, user_id: int) -> dict[str, int]:
            self.calls += 1
            return {"id": user_id}

    repo = Repo()
    assert repo.user(5) == {"id": 5}
    assert repo.user(user_id=5) == {"id": 5}
    assert repo.calls == 1
    assert cache.get("user:5") == {"id": 5}
    assert repo.user.invalidate(5) is True
    assert cache.get("user:5") is None


def test_cached_unencodable_argument_is_an_error(client: Any, prefix: str) -> None:
    cache = Cache(client, prefix, 60)

    @cache.cached()
    def f(x: Any) -> int:
        return 1

    with pytest.raises(ConfigurationError, match="key="):
        f(object())


async def test_async_cached_and_invalidate(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)
    calls: list[int] = []

    @cache.cached(ttl=30)
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert await square(3) == 9
    assert await square(3) == 9
    assert calls == [3]
    assert await square.invalidate(3) is True
    assert await square(x=3) == 9
    assert calls == [3, 3]
    await client.aclose()


def test_backend_errors_are_the_librarys(prefix: str) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    cache = Cache(dead, prefix, 60)
    with pytest.raises(BackendError):
        cache.get("k")


def test_warm_in_batches_with_progress(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    seen_progress: list[tuple[int, int]] = []
    result = cache.warm(
        {f"k{i}": i for i in range(25)},
        batch_size=10,
        progress=lambda done, total: seen_progress.append((done, total)),
    )
    assert (result.stored, result.skipped) == (25, 0)
    assert seen_progress == [(10, 25), (20, 25), (25, 25)]
    assert [cache.get(f"k{i}") for i in range(25)] == list(range(25))
    batches: list[list[str]] = []

    def load(keys: list[str]) -> dict[str, str]:
        batches.append(keys)
        return {k: k.upper() for k in keys if k != "skip"}

    result = cache.warm(["a", "b", "skip", "c"], loader=load, batch_size=3)
    assert batches == [["a", "b", "skip"], ["c"]]
    assert (result.stored, cache.get("c"), cache.get("skip")) == (3, "C", None)


async def test_async_warm_and_pickle_hmac(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60, serializer="pickle", secret="x" * 20)

    async def load(keys: list[str]) -> dict[str, Any]:
        return {k: (k, frozenset([1])) for k in keys}

    result = await cache.warm(["a", "b"], loader=load)
    assert result.stored == 2
    assert await cache.get("b") == ("b", frozenset([1]))
    await client.aclose()


def test_pickle_payload_in_json_cache_is_never_unpickled(
    client: Any, prefix: str, tmp_path: Any
) -> None:
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> Any:
            return (open, (str(canary), "w"))

    cache = Cache(client, prefix, 60)
    evil = pickle.dumps(Evil())
    for raw in (
        b"rp2:json:99999999999999:0:0:" + evil,
        b"rp2:pickle:99999999999999:0:0:" + evil,
        b"rp2:pickle-hmac:99999999999999:0:0:" + evil,
        b"rp2:int:99999999999999:0:0:" + evil,
        b"rp1:json:99999999999999:0:" + evil,
        evil,
        b"rp2:json:99999999999999:0:0:{not json",
        b"rp2:json:notanumber:0:0:1",
        b"",
    ):
        client.set(cache.key_of("k"), raw)
        assert cache.get("k") is None
        assert cache.get_or_load("k", lambda: "safe") == "safe"
    assert not canary.exists()
    signed = Cache(client, prefix + "s", 60, serializer="pickle", secret=b"k" * 32)
    for raw in (b"\x00" * 32 + evil, evil):
        client.set(signed.key_of("k"), b"rp2:pickle-hmac:99999999999999:0:0:" + raw)
        assert signed.get("k") is None
    # A correctly signed entry with one byte flipped is rejected too.
    signed.set("k", "good")
    stored = bytearray(client.get(signed.key_of("k")))
    stored[-3] ^= 0x01
    client.set(signed.key_of("k"), bytes(stored))
    assert signed.get("k") is None
    other_secret = Cache(client, prefix + "s", 60, serializer="pickle", secret=b"z" * 32)
    signed.set("k", "good")
    assert other_secret.get("k") is None
    assert not canary.exists()


async def test_async_backend_runs_many_tasks(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)

    async def make(i: int) -> int:
        return i

    values = await asyncio.gather(
        *(cache.get_or_load(f"k{i}", functools.partial(make, i)) for i in range(50))
    )
    assert values == list(range(50))
    with pytest.raises(ConfigurationError, match="not an async function"):
        await cache.get_or_load("k", lambda: make(1))  # undetectable as async: refused
    await client.aclose()


def test_decode_responses_client_is_refused(backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match="decode_responses"):
        Cache(backend.client(decode_responses=True), "n")


async def test_async_decode_responses_client_is_refused(backend: Backend) -> None:
    client = backend.async_client(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        AsyncCache(client, "n")
    await client.aclose()


def test_old_format_entries_are_misses_logged_once(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(client, prefix, 60, stampede=None)  # fast reads: parsed by the client
    for i in range(50):  # entries of the header before generations (rp1), as after an upgrade
        client.set(cache.key_of(f"k{i}"), b"rp1:json:99999999999999:0:1")
    with caplog.at_level(logging.WARNING, logger="redis_patterns.cache"):
        assert cache.get_many([f"k{i}" for i in range(50)]) == [None] * 50
        assert cache.get_or_load("k0", lambda: "new") == "new"
    assert cache.stats["malformed"] == 50  # (the read script reports them as plain misses)
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1
