"""`RedisPatternsCache` beyond Django's own suite: native async, round trips, options, failure."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import zlib
from typing import Any

import pytest
from _django_sdist import url_of

from redis_patterns._logging import reset as reset_coalesced
from redis_patterns.testing.pytest_plugin import Backend

pytest.importorskip("django")

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if not settings.configured:
    settings.configure(SECRET_KEY="redis-patterns tests")

from redis_patterns.integrations.django.cache import (
    RedisPatternsCache,
    _escape,
    _reset_for_tests,
)


@pytest.fixture(autouse=True)
def _fresh_clients() -> Any:
    yield
    _reset_for_tests()  # the next test's servers are other ones


def _backend(backend: Backend, prefix: str, **options: Any) -> RedisPatternsCache:
    params: dict[str, Any] = {"OPTIONS": {"NAMESPACE": prefix.replace(":", "-"), **options}}
    return RedisPatternsCache(url_of(backend), params)


def _same_bucket(count: int) -> list[str]:
    """Django keys whose entries share one cluster hash tag (":1:" is Django's key prefix)."""
    found: dict[int, list[str]] = {}
    i = 0
    while True:
        key = f"k{i}"
        bucket = found.setdefault(zlib.crc32(f":1:{key}".encode()) % 1024, [])
        bucket.append(key)
        if len(bucket) == count:
            return bucket
        i += 1


def test_one_command_per_operation(backend: Backend, prefix: str) -> None:
    cache = _backend(backend, prefix)
    keys = _same_bucket(3)
    cache.set_many(dict.fromkeys(keys, 1))
    operations: list[tuple[str, Any]] = [
        ("get", lambda: cache.get(keys[0])),
        ("set", lambda: cache.set(keys[0], 2)),
        ("add", lambda: cache.add(keys[0], 3)),
        ("has_key", lambda: cache.has_key(keys[0])),
        ("incr", lambda: cache.incr(keys[0])),
        ("touch", lambda: cache.touch(keys[0], 30)),
        ("get_many", lambda: cache.get_many(keys)),
        ("set_many", lambda: cache.set_many(dict.fromkeys(keys, 4))),
        ("delete_many", lambda: cache.delete_many(keys)),
        ("delete", lambda: cache.delete(keys[0])),
    ]
    for name, call in operations:
        call()  # the node's script cache
        with backend.counter() as seen:
            call()
        # Reads are one MGET (entry and generation: no stale window by default, see fast_reads);
        # has_key reads the header only, with the generation and the clock (standalone).
        expected = {"get": ["MGET"], "get_many": ["MGET"]}
        if not backend.is_cluster:
            expected["has_key"] = ["GET", "GETRANGE", "TIME"]
        assert seen.names == expected.get(name, ["EVALSHA"]), name


async def test_native_async_methods(backend: Backend, prefix: str) -> None:
    cache = _backend(backend, prefix)
    await cache.aset("a", {"x": 1})
    assert await cache.aget("a") == {"x": 1}
    assert await cache.aget("missing", "d") == "d"
    assert await cache.aadd("a", 2) is False
    assert await cache.aadd("b", 41) is True
    assert await cache.aincr("b") == 42
    assert await cache.adecr("b", 2) == 40
    with pytest.raises(ValueError, match="not found"):
        await cache.aincr("nope")
    assert await cache.aset_many({"c": None, "d": 4}) == []
    assert await cache.aget_many(["a", "c", "d", "e"]) == {"a": {"x": 1}, "c": None, "d": 4}
    assert await cache.ahas_key("c") is True
    assert await cache.atouch("d", None) is True
    assert await cache.adelete("a") is True
    await cache.adelete_many(["c", "d"])
    assert await cache.aget_many(["c", "d"]) == {}
    assert await cache.aget_or_set("g", lambda: "made") == "made"
    await cache.aclear()
    assert await cache.aget("b") is None
    assert cache.get("g") is None  # the sync side sees the same data
    with backend.counter() as seen:
        await cache.aget("b")
    assert seen.names == ["MGET"]
    await cache.aclose()


def test_timeouts_follow_django(backend: Backend, prefix: str) -> None:
    cache = _backend(backend, prefix)
    raw: Any = backend.client()
    cache.set("forever", 1, None)
    assert raw.pttl(cache.cache.key_of(":1:forever")) == -1
    cache.set("zero", 1, 0)
    cache.set("negative", 1, -5)
    assert cache.get("zero") is None
    assert cache.get("negative") is None
    assert cache.add("zero", 1, 0) is True  # it could have been added, but expired at once
    assert cache.has_key("zero") is False
    cache.set("t", 1, 100)
    assert 99_000 < raw.pttl(cache.cache.key_of(":1:t")) <= 100_000  # no jitter by default
    assert cache.touch("t", 0) is True
    assert cache.get("t") is None
    defaulted = RedisPatternsCache(url_of(backend), {"TIMEOUT": 7, "OPTIONS": {"NAMESPACE": "d"}})
    defaulted.set("k", 1)
    assert 6_000 < raw.pttl(defaulted.cache.key_of(":1:k")) <= 7_000


@pytest.mark.filterwarnings("ignore::django.core.cache.backends.base.CacheKeyWarning")
def test_keys_django_allows_are_all_stored(backend: Backend, prefix: str) -> None:
    cache = _backend(backend, prefix)
    keys = ["{tag}", "a}b{c", "per%cent", "%7B", "x" * 2000, "y" * 2000, "nul\x00"]
    for i, key in enumerate(keys):
        cache.set(key, i)
    assert [cache.get(k) for k in keys] == list(range(len(keys)))
    assert len({_escape(k) for k in keys}) == len(keys)
    assert _escape("%7B") != _escape("{")


def test_default_serializer_is_signed_pickle_keyed_from_secret_key(
    backend: Backend, prefix: str
) -> None:
    cache = _backend(backend, prefix)
    cache.set("s", {1, 2})
    raw: Any = backend.client()
    assert raw.get(cache.cache.key_of(":1:s")).startswith(b"rp2:pickle-hmac:")
    other = RedisPatternsCache(
        url_of(backend),
        {"OPTIONS": {"NAMESPACE": prefix.replace(":", "-"), "SECRET": b"another secret key!"}},
    )
    assert other.get("s") is None  # a different key: the signature does not match
    as_json = _backend(backend, prefix + "j", SERIALIZER="json")
    as_json.set("j", [1])
    assert as_json.get("j") == [1]


def test_stampede_option_runs_the_callable_once(backend: Backend, prefix: str) -> None:
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.2)
        return "v"

    results: list[Any] = []

    def reader() -> None:
        results.append(_backend(backend, prefix, STAMPEDE="lock").get_or_set("k", slow))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (results, len(calls)) == (["v"] * 8, 1)
    cache = _backend(backend, prefix, STAMPEDE="lock")
    assert cache.get_or_set("none", lambda: None) is None
    assert cache.has_key("none") is True  # Django's get_or_set stores None


def test_bad_configuration() -> None:
    with pytest.raises(ImproperlyConfigured, match="one LOCATION"):
        RedisPatternsCache(["redis://a:1", "redis://b:2"], {})
    with pytest.raises(ImproperlyConfigured, match="unknown"):
        RedisPatternsCache("redis://a:1", {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})
    with pytest.raises(ImproperlyConfigured, match="host:port"):
        RedisPatternsCache("redis+cluster://a,b:2", {}).cache  # noqa: B018


def test_fail_open_answers_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    reset_coalesced()
    cache = RedisPatternsCache(
        "redis://127.0.0.1:1/0",
        {"OPTIONS": {"FAIL_OPEN": True, "CLIENT": {"socket_connect_timeout": 0.2}}},
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            assert cache.get("k", "default") == "default"
            assert cache.get_many(["a", "b"]) == {}
            assert cache.has_key("k") is False
            cache.set("k", 1)
            assert cache.add("k", 1) is False
            assert cache.set_many({"a": 1, "b": 2}) == ["a", "b"]
            assert cache.get_or_set("k", lambda: "computed") == "computed"
    lines = [r for r in caplog.records if "fail" in r.getMessage().lower()]
    assert len(lines) <= 2  # one per logger (the cache's and the backend's), not one per call
    with pytest.raises(Exception, match="cannot reach"):
        cache.delete("k")  # an invalidation that fails is never silent


def test_async_fail_open() -> None:
    reset_coalesced()
    cache = RedisPatternsCache(
        "redis://127.0.0.1:1/0",
        {"OPTIONS": {"FAIL_OPEN": True, "CLIENT": {"socket_connect_timeout": 0.2}}},
    )

    async def main() -> None:
        assert await cache.aget("k", "d") == "d"
        await cache.aset("k", 1)
        assert await cache.aset_many({"a": 1}) == ["a"]
        await cache.aclose()

    asyncio.run(main())
