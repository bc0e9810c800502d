"""Cache stores of big values (issue 16): from `BIG_VALUE_BYTES` up the value never passes
through Lua (MULTI / SET NX PX / cache_set_prep / APPEND / cache_set_commit / EXEC, one round
trip), with the outcomes of the one script (``cache_set.lua``), which smaller values keep.

The outcome tests run each case down both paths (``path``: the block forced for any size, or
the script for any size) and compare with what the script path does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import NoScriptError

from redis_patterns import (
    FOREVER,
    AsyncCache,
    Cache,
    EmbeddedServer,
    ScriptError,
    connect,
)
from redis_patterns._core.cache_keys import BIG_VALUE_BYTES
from redis_patterns._core.cache_load import _SCRATCH_MS
from redis_patterns._plan import Eval, Multi
from redis_patterns._script import package_script
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.pytest_plugin import Backend

BIG = "b" * (2 * BIG_VALUE_BYTES)  # JSON text: the payload is this and two quotes
BLOCK = ["MULTI", "SET", "EVALSHA", "APPEND", "EVALSHA", "EXEC"]


@pytest.fixture(params=["script", "block"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _cache(client: Any, prefix: str, path: str = "", **options: Any) -> Cache:
    cache = Cache(client, prefix, options.pop("ttl", 60), **options)
    if path:
        # Whatever the size: the block (threshold 1 byte) or the one script (never).
        cache._core.big_value_bytes = 1 if path == "block" else 2**62
    return cache


def _leftovers(backend: Backend, prefix: str) -> list[bytes]:
    """Scratch keys of ``prefix``'s caches (standalone ``...}:set``, cluster ``}:w:``)."""
    keys = backend.scan(f"*{prefix}*")
    return [k for k in keys if k.endswith(b"}:set") or b"}:w:" in k]


# --- exact commands, one round trip ----------------------------------------------------------


def test_big_set_add_and_load_are_one_block(backend: Backend, prefix: str) -> None:
    client = backend.client()
    cache = _cache(client, prefix)
    read = ["EVALSHA"] if backend.is_cluster else ["MGET", "TIME", "EVALSHA"]  # a miss: + lock
    # Every script cached on the node owning "k" (a cluster caches scripts per node).
    cache.get_or_load("k", lambda: BIG)
    cache.set("k", "small")
    with backend.counter() as seen:
        cache.set("k", BIG)
    assert seen.names == BLOCK
    assert "RENAME" in [c.name for c in seen.inside_scripts]
    assert not any(len(arg) > BIG_VALUE_BYTES for c in seen.inside_scripts for arg in c.args)
    with backend.counter() as seen:
        cache.set("k", "small")
    assert seen.names == ["EVALSHA"]
    cache.delete("k")
    with backend.counter() as seen:
        assert cache.add("k", BIG) is True
    assert seen.names == BLOCK
    cache.delete("k")
    with backend.counter() as seen:
        assert cache.get_or_load("k", lambda: BIG) == BIG
    assert seen.names == [*read, *BLOCK]
    assert cache.get("k") == BIG
    assert _leftovers(backend, prefix) == []


def test_big_set_is_one_round_trip(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, driver_info=None) as client:
        cache = _cache(client, prefix)
        cache.set("k", BIG)
        before = proxy.stats.forwarded_requests
        cache.set("k", BIG + "!")
        assert proxy.stats.forwarded_requests - before == 1
        assert cache.get("k") == BIG + "!"


async def test_async_big_set_and_load(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)

    async def loader() -> str:
        return BIG + "l"

    await cache.set("k", BIG)
    with backend.counter() as seen:
        await cache.set("k", BIG + "a")
    assert seen.names == BLOCK
    assert await cache.get("k") == BIG + "a"
    assert await cache.add("k", BIG) is False
    await cache.delete("k")
    assert await cache.get_or_load("k", loader) == BIG + "l"
    assert await cache.get("k") == BIG + "l"
    assert _leftovers(backend, prefix) == []
    await client.aclose()


# --- the same outcomes as the script ---------------------------------------------------------


def test_entry_layout_and_expiry(client: Any, prefix: str, path: str) -> None:
    cache = _cache(client, prefix, path, ttl=100, jitter=0.0, stale_ttl=50)
    cache.set("k", [1])
    magic, tag, soft, delta, generation, payload = client.get(cache.key_of("k")).split(b":", 5)
    assert (magic, tag, delta, generation, payload) == (b"rp2", b"json", b"0", b"0", b"[1]")
    seconds, micros = client.time()
    assert int(soft) - (seconds * 1000 + micros // 1000) == pytest.approx(100_000, abs=5_000)
    assert client.pttl(cache.key_of("k")) == pytest.approx(150_000, abs=5_000)
    cache.set("f", [2], ttl=FOREVER)
    assert client.get(cache.key_of("f")).split(b":", 5)[2] == b"0"
    assert client.pttl(cache.key_of("f")) == -1
    assert cache.get("f") == [2]
    plain = _cache(client, prefix + "p", path, ttl=100, jitter=0.0, stampede=None)
    plain.set("k", 1)  # no stale window: soft and hard expiry coincide
    assert client.get(plain.key_of("k")).split(b":", 5)[2].startswith(b"=")


def test_non_utf8_bytes_and_huge_values(backend: Backend, prefix: str) -> None:
    client = backend.client()
    cache = _cache(client, prefix, serializer="msgpack", max_value_bytes=11 * 2**20)
    raw = bytes(range(256)) * 4096  # 1 MB, every byte value
    cache.set("raw", raw)
    assert cache.get("raw") == raw
    huge = os.urandom(10 * 2**20)
    cache.set("huge", huge)
    assert cache.get("huge") == huge
    assert cache.add("huge", b"other") is False
    assert _leftovers(backend, prefix) == []


def test_add_absent_present_stale_and_cleared(client: Any, prefix: str, path: str) -> None:
    cache = _cache(client, prefix, path, jitter=0.0, stale_ttl=60)
    assert cache.add("k", 1) is True
    assert cache.add("k", 2) is False  # fresh
    assert cache.get("k") == 1
    cache.set("s", 1, ttl=0.05)
    threading.Event().wait(0.1)  # soft expiry passed; the entry stays in its stale window
    assert client.exists(cache.key_of("s")) == 1
    assert cache.add("s", 3) is True
    assert cache.get("s") == 3
    cache.clear()  # an entry of an older generation is absent for add
    assert cache.add("k", 4) is True
    assert cache.get("k") == 4


def test_a_loader_stores_under_its_lock_and_lets_it_go(client: Any, prefix: str, path: str) -> None:
    cache = _cache(client, prefix, path)
    assert cache.get_or_load("k", lambda: {"v": 1}) == {"v": 1}
    assert cache.get("k") == {"v": 1}
    assert client.exists(cache._core.lock_key(cache.key_of("k"))) == 0


def test_a_set_during_a_load_wins(client: Any, prefix: str, path: str) -> None:
    loading, writer = _cache(client, prefix, path), _cache(client, prefix, path)

    def loader() -> str:
        writer.set("k", "new")  # the loader's lock becomes a tombstone
        return "old"

    assert loading.get_or_load("k", loader) == "old"  # its caller gets what it read
    assert writer.get("k") == "new"  # ... but it did not store it over the newer write
    assert client.get(writer._core.lock_key(writer.key_of("k"))) == b"!"


def test_a_clear_during_a_load_drops_its_store(client: Any, prefix: str, path: str) -> None:
    cache = _cache(client, prefix, path)

    def loader() -> str:
        cache.clear()
        return "before the clear"

    assert cache.get_or_load("k", loader) == "before the clear"
    assert client.get(cache.key_of("k")) is None
    assert client.exists(cache._core.lock_key(cache.key_of("k"))) == 0  # let go


def test_an_entry_key_of_another_type(backend: Backend, prefix: str, path: str) -> None:
    client = backend.client()
    cache = _cache(client, prefix, path)
    entry = cache.key_of("k")
    client.hset(entry, "f", "v")
    with pytest.raises(ScriptError, match="WRONGTYPE"):
        cache.add("k", 1)  # add reads the entry
    assert client.type(entry) == b"hash"
    cache.set("k", 2)  # a plain set replaces whatever is there
    assert cache.get("k") == 2
    assert _leftovers(backend, prefix) == []


# --- the script cache flushed ----------------------------------------------------------------


def test_big_stores_after_a_script_flush(backend: Backend, prefix: str) -> None:
    client = backend.client()
    cache = _cache(client, prefix)
    cache.set("k", BIG)
    backend.flush_scripts()
    cache.set("k", BIG + "1")  # both scripts meet NOSCRIPT: the block sent again as EVAL
    assert cache.get("k") == BIG + "1"
    assert _leftovers(backend, prefix) == []
    cache.delete("k")
    backend.flush_scripts()
    assert cache.get_or_load("k", lambda: BIG + "2") == BIG + "2"
    assert cache.get("k") == BIG + "2"
    assert client.exists(cache._core.lock_key(cache.key_of("k"))) == 0
    assert _leftovers(backend, prefix) == []


def test_a_block_that_met_noscript_and_was_never_sent_again_leaves_nothing_untimed(
    backend: Backend, prefix: str
) -> None:
    """Both scripts of a big store met ``NOSCRIPT`` and the block was not sent again (the link
    or the process died first): its ``APPEND`` still ran. The scratch key it made lives
    ``_SCRATCH_MS`` at most, however big, rather than forever. The block here is the one the
    library sends, run once by hand on a server with no scripts cached."""
    client = backend.client()
    cache = _cache(client, prefix)
    entry = cache.key_of("k")
    scratch = cache._core.scratch_key(entry)
    for soft in (60.0, FOREVER):
        block = next(cache._core.set("k", BIG, soft))  # the plan's one effect: the block
        assert isinstance(block, Multi)
        backend.flush_scripts()
        pipe = client.pipeline(transaction=True)
        for item in block.effects:
            if isinstance(item, Eval):
                keys = item.keys
                pipe.execute_command("EVALSHA", item.script.sha, len(keys), *keys, *item.args)
            else:
                pipe.execute_command(*item.args)
        replies = pipe.execute(raise_on_error=False)
        assert [type(r) for r in replies if isinstance(r, Exception)] == [NoScriptError] * 2
        assert client.exists(entry) == 0  # nothing stored
        assert 0 < client.pttl(scratch) <= _SCRATCH_MS
        client.delete(scratch)


@pytest.mark.parametrize("loaded", ["cache_set_prep", "cache_set_commit"])
def test_one_script_of_the_block_missing(backend: Backend, prefix: str, loaded: str) -> None:
    """The prep ran and the commit met NOSCRIPT (it left its header behind), or the other way
    round (the commit dropped the payload alone): the block sent again stores once, as asked,
    and leaves no scratch key; a loader's lock is let go."""
    client = backend.client()
    cache = _cache(client, prefix)
    entry = cache.key_of("k")
    cache.set("k", "warm the node")
    for value in (BIG + "set", BIG + "load"):
        backend.flush_scripts()
        for server in backend.servers:
            with server.client() as node:
                node.script_load(package_script(loaded).source)
        if value.endswith("set"):
            cache.set("k", value)
        else:
            cache.delete("k")
            assert cache.get_or_load("k", lambda v=value: v) == value  # type: ignore[misc]
            assert client.exists(cache._core.lock_key(entry)) == 0
        assert cache.get("k") == value
        assert _leftovers(backend, prefix) == []


def test_the_commit_stores_only_a_header_and_this_payload(client: Any, prefix: str) -> None:
    """Whatever the scratch key holds that is not exactly a header and the payload just
    appended (a leftover of a block whose commit did not run, then the payload again; the
    payload alone, whatever it starts with) is deleted, never stored."""
    cache = _cache(client, prefix)
    entry = cache.key_of("k")
    scratch = cache._core.scratch_key(entry)
    lock = cache._core.lock_key(entry)
    commit = package_script("cache_set_commit")
    payload = b"rp2:json:0:0:0:" + b"x" * 100  # looks like an entry itself
    header = b"rp2:json:0:0:0:"

    def run(*args: Any) -> Any:
        return client.eval(commit.source, 3, scratch, entry, lock, *args)

    for held in (header + payload + payload, payload):
        client.set(scratch, held, px=60_000)
        assert run(len(payload), 0, "", 1000, "", "") == 0
        assert client.exists(scratch, entry) == 0
    client.set(scratch, header + payload, px=60_000)
    assert run(len(payload), 0, "", 1000, "", "") == 1
    assert client.get(entry) == header + payload
    assert client.exists(scratch) == 0
