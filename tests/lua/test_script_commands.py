"""The commands each hot-path script runs inside the server, counted exactly.

Every hot path is one round trip; what it costs the server is, mostly, how many commands its
script runs. ``INFO commandstats`` on a private server, reset before each operation, counts
the top-level command and every command the script ran (a script's ``redis.call()``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from redis_patterns import (
    FOREVER,
    GCRA,
    Cache,
    EmbeddedServer,
    FixedWindow,
    Lock,
    MultiLimit,
    RateLimiter,
    SessionStore,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)

BINARIES = [pytest.param(None, id="valkey"), pytest.param("redis7", id="redis7")]
DAY = 86400.0
WINDOW_US = int(DAY * 1e6)
# what the measuring itself runs
_OWN = {"config|resetstat", "info"}


def commands(client: Any, operation: Callable[[], object]) -> Counter[str]:
    """The commands the server ran for ``operation``: the top-level ones and those inside."""
    client.config_resetstat()
    operation()
    stats = client.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") not in _OWN
        }
    )


def server_now_us(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


@pytest.mark.parametrize("binary", BINARIES)
def test_each_limiter_hit_runs_exactly_these_commands(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    client = server_factory(binary).client()
    expected: dict[str, list[tuple[Callable[[], object], dict[str, int]]]] = {}

    def run(name: str, steps: list[tuple[Callable[[], object], dict[str, int]]]) -> None:
        """Each step from a fresh server state: exactly these commands."""
        steps[0][0]()  # loads the script (EVALSHA, then EVAL)
        client.flushall()
        for i, (operation, want) in enumerate(steps):
            assert commands(client, operation) == Counter(want), (name, i)

    fixed = FixedWindow(client, 2, DAY)
    expected["fixed window"] = [
        (lambda: fixed.peek("a"), {"evalsha": 1, "get": 1}),
        # the window's first hit sets the counter's expiry: the window's end
        (lambda: fixed.hit("a"), {"evalsha": 1, "incrby": 1, "time": 1, "pexpireat": 1}),
        (lambda: fixed.hit("a"), {"evalsha": 1, "incrby": 1, "pttl": 1}),
        # a refusal undoes its INCRBY
        (lambda: fixed.hit("a"), {"evalsha": 1, "incrby": 1, "pttl": 1, "decrby": 1}),
        (lambda: fixed.peek("a"), {"evalsha": 1, "get": 1, "pttl": 1}),
    ]
    sliding = SlidingWindow(client, 2, DAY)
    read = {"evalsha": 1, "time": 1, "hmget": 1}
    expected["sliding window"] = [
        (lambda: sliding.hit("a"), {**read, "hset": 1, "pexpireat": 1}),
        (lambda: sliding.hit("a"), {**read, "hincrby": 1}),
        (lambda: sliding.hit("a"), read),
        (lambda: sliding.peek("a"), read),
    ]
    buckets: dict[str, RateLimiter] = {
        "token bucket": TokenBucket(client, 2, 1e-6),
        "gcra": GCRA(client, 1, DAY, burst=2),
    }
    for name, limiter in buckets.items():
        read = {"evalsha": 1, "time": 1, "get": 1}
        hit, peek = partial(limiter.hit, "a"), partial(limiter.peek, "a")
        expected[name] = [
            (hit, {**read, "set": 1}),
            (hit, {**read, "set": 1}),
            (hit, read),
            (peek, read),
        ]
    log = SlidingLog(client, 3, DAY)
    write = {"zadd": 1, "pexpire": 1}
    expected["sliding log"] = [
        (lambda: log.peek("a"), {"evalsha": 1, "time": 1, "zrange": 1}),
        (lambda: log.hit("a"), {"evalsha": 1, "time": 1, "zrange": 1, **write}),
        # the newest member, then the two oldest (both in the window)
        (lambda: log.hit("a"), {"evalsha": 1, "time": 1, "zrange": 2, **write}),
        (lambda: log.hit("a"), {"evalsha": 1, "time": 1, "zrange": 2, **write}),
        # refused: where the window's units are (ZCOUNT, ZCARD), a binary search over the
        # three ranks (two ZRANGEs), then the member whose expiry lets the hit pass
        (
            lambda: log.hit("a"),
            {"evalsha": 1, "time": 1, "zrange": 5, "zcount": 1, "zcard": 1},
        ),
    ]
    multi = MultiLimit([FixedWindow(client, 5, DAY, name="m1"), GCRA(client, 5, DAY)])
    expected["multi limit"] = [
        # one general script over both keys: TIME, each limit's read, then each one's write
        (
            lambda: multi.hit("a"),
            {"evalsha": 1, "time": 1, "get": 2, "incrby": 1, "pexpireat": 1, "set": 1},
        ),
        (
            lambda: multi.hit("a"),
            {"evalsha": 1, "time": 1, "get": 2, "pttl": 1, "incrby": 1, "set": 1},
        ),
        (lambda: multi.peek("a"), {"evalsha": 1, "time": 1, "get": 2, "pttl": 1}),
    ]

    for name, steps in expected.items():
        run(name, steps)


@pytest.mark.parametrize("binary", BINARIES)
def test_a_sliding_log_hit_trims_only_members_that_left_the_window(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    client = server_factory(binary).client()
    log = SlidingLog(client, 3, DAY)
    log.hit("warm")  # loads the script
    (key,) = log.keys("k")
    write = {"zadd": 1, "pexpire": 1}

    def state(*ages_us: int) -> None:
        """Members admitted ``ages_us`` ago (one unit each), as the script writes them."""
        client.delete(key)
        now = server_now_us(client)
        for total, age in enumerate(ages_us, 1):
            client.zadd(key, {f"{total}:1": now - age})

    day = WINDOW_US
    # the oldest member left the window, the second did not
    state(day + 10**7, 10**6)
    assert commands(client, lambda: log.hit("k")) == Counter(
        {"evalsha": 1, "time": 1, "zrange": 2, "zremrangebyscore": 1, **write}
    )
    assert client.zcard(key) == 2
    # two left it: the oldest in the window is found by score
    state(day + 2 * 10**7, day + 10**7, 10**6)
    assert commands(client, lambda: log.hit("k")) == Counter(
        {"evalsha": 1, "time": 1, "zrange": 2, "zrangebyscore": 1, "zremrangebyscore": 1, **write}
    )
    assert client.zcard(key) == 2
    # every member left it: nothing to look up
    state(day + 2 * 10**7, day + 10**7)
    assert commands(client, lambda: log.hit("k")) == Counter(
        {"evalsha": 1, "time": 1, "zrange": 1, "zremrangebyscore": 1, **write}
    )
    assert client.zcard(key) == 1
    # a refusal writes nothing, whatever has left the window
    state(day + 10**7, 3 * 10**6, 2 * 10**6, 10**6)
    found = commands(client, lambda: log.hit("k"))
    assert found["zremrangebyscore"] == found["zadd"] == found["pexpire"] == 0
    assert client.zcard(key) == 4


@pytest.mark.parametrize("binary", BINARIES)
def test_lock_operations_run_exactly_these_commands(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    client = server_factory(binary).client()
    native = binary is None  # Valkey >= 9: DELIFEQ and SET IFEQ, no script
    warm = Lock(client, "warm", ttl=5)
    warm.acquire()
    warm.extend()
    warm.release()
    lock, rival = Lock(client, "x", ttl=5), Lock(client, "x", ttl=5)
    # a new fence counter starts from the server's clock
    assert commands(client, lock.acquire) == Counter({"evalsha": 1, "set": 2, "incr": 1, "time": 1})
    assert commands(client, lambda: rival.acquire(blocking=False)) == Counter(
        {"evalsha": 1, "set": 1, "pttl": 1}
    )
    if native:
        assert commands(client, lock.extend) == Counter({"set": 1})
        assert commands(client, lock.release) == Counter({"delifeq": 1})
    else:
        assert commands(client, lock.extend) == Counter({"evalsha": 1, "get": 1, "pexpire": 1})
        assert commands(client, lock.release) == Counter({"evalsha": 1, "get": 1, "del": 1})
    first = lock.fence
    # from then on an acquisition is SET NX PX and INCR
    assert commands(client, lock.acquire) == Counter({"evalsha": 1, "set": 1, "incr": 1})
    assert lock.fence == (first or 0) + 1
    lock.release()


@pytest.mark.parametrize("binary", BINARIES)
def test_session_read_runs_exactly_these_commands(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    client = server_factory(binary).client()
    store = SessionStore(client, idle_ttl=60, absolute_ttl=3600)
    small = store.create({"user": "alice", "cart": 3}).id
    large = store.create({f"f{i}": i for i in range(40)}).id
    # the large field among others: MEMORY USAGE's default 5 samples would miss it
    huge = store.create({**{f"f{i}": i for i in range(8)}, "blob": "x" * 200_000}).id
    store.get(small)  # loads the script
    read = {"evalsha": 1, "memory|usage": 1, "hgetall": 1, "time": 1, "pexpire": 1}
    # the metadata comes from the HGETALL reply...
    assert commands(client, lambda: store.get(small)) == Counter(read)
    # ...or, for a session of many fields, from an HMGET rather than a look at every field
    assert commands(client, lambda: store.get(large)) == Counter({**read, "hmget": 1})
    # a session above 64 KiB is not copied through Lua: the script slides its expiry from the
    # HMGET of its metadata, and a plain HGETALL after it reads the fields as stored
    session = store.get(huge)
    assert session is not None
    assert session["blob"] == "x" * 200_000
    assert session["f7"] == 7
    assert session.ttl == 60
    assert commands(client, lambda: store.get(huge)) == Counter({**read, "hmget": 1})
    missing = small[:-1] + ("A" if small[-1] != "A" else "B")
    assert commands(client, lambda: store.get(missing)) == Counter(
        {"evalsha": 1, "memory|usage": 1}
    )


@pytest.mark.parametrize("binary", BINARIES)
def test_session_writes_run_exactly_these_commands(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    """A small write is one script; a big one a MULTI/EXEC block whose only script is the
    commit (the values go by a plain HSET); a rotation moves the fields without reading them."""
    client = server_factory(binary).client()
    store = SessionStore(client, idle_ttl=60)
    sid = store.create({"user": "alice", "blob": "x" * 200_000}).id
    store.update(sid, {"n": 1})  # loads the script
    write = {"evalsha": 1, "hexists": 1, "hset": 1}
    assert commands(client, lambda: store.update(sid, {"n": 2})) == Counter(write)
    block = {"multi": 1, "hset": 1, "pexpire": 1, "evalsha": 1, "hexists": 1, "exec": 1}
    block["pttl"] = 1  # the commit checks the NX did not give a live session the leftover TTL
    assert commands(client, lambda: store.update(sid, {"blob": "y" * 200_000})) == Counter(block)
    assert commands(client, lambda: store.update(sid, {"blob": "z" * 200_000}, idle_ttl=30)) == (
        Counter({**block, "hset": 2, "time": 1, "hmget": 1, "pexpire": 2})
    )
    sid = store.rotate(sid) or ""  # loads the script
    rotate = {"hmget": 2, "evalsha": 1, "exists": 1, "time": 1, "rename": 1, "pexpire": 1}
    rotated: list[str | None] = []
    assert commands(client, lambda: rotated.append(store.rotate(sid))) == Counter(rotate)
    sid = rotated[0] or ""  # the fields moved by RENAME, not read: no HGETALL
    store.destroy(sid)
    # a session that ended: the HSET recreated its hash, the commit deletes it
    assert commands(client, lambda: store.update(sid, {"blob": "y" * 200_000})) == Counter(
        {**block, "pttl": 0, "del": 1}
    )
    assert commands(client, lambda: store.update(sid, {"n": 3})) == Counter(
        {"evalsha": 1, "hexists": 1, "del": 1}
    )


@pytest.mark.parametrize("binary", BINARIES)
def test_cache_touch_rewrites_only_the_header(
    server_factory: Callable[..., EmbeddedServer], binary: str | None
) -> None:
    """``touch`` reads the entry's header (``GETRANGE``) and writes the new one over it in
    place (``SETRANGE``): a 1 MB value never passes through Lua. Only a header whose length
    changes (no expiry now, so ``0`` for the soft expiry's 13 digits) is rebuilt whole."""
    client = server_factory(binary).client()
    cache = Cache(client, "touched", 60, jitter=0, stampede=None, invalidations=False)
    value = "v" * 1_000_000
    cache.set("k", value)
    cache.touch("k", 120)  # the script loaded
    assert commands(client, lambda: cache.touch("k", 90)) == Counter(
        {"evalsha": 1, "getrange": 1, "get": 1, "time": 1, "setrange": 1, "pexpire": 1}
    )
    assert 85_000 < client.pttl(cache.key_of("k")) <= 90_000
    assert cache.get("k") == value
    assert commands(client, lambda: cache.touch("k", FOREVER)) == Counter(
        {"evalsha": 1, "getrange": 1, "get": 2, "time": 1, "set": 1}
    )
    assert client.pttl(cache.key_of("k")) == -1
    assert cache.get("k") == value
    assert commands(client, lambda: cache.touch("missing", 90)) == Counter(
        {"evalsha": 1, "getrange": 1, "get": 1}
    )
