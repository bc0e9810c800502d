"""Rate limiters on real servers: semantics, one command per call, TTLs, bad input, retry_after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from redis_patterns import (
    GCRA,
    AsyncFixedWindow,
    AsyncGCRA,
    AsyncMultiLimit,
    AsyncSlidingLog,
    AsyncSlidingWindow,
    AsyncTokenBucket,
    ConfigurationError,
    Decision,
    FixedWindow,
    MultiLimit,
    RateLimitedError,
    RateLimiter,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from redis_patterns.testing.pytest_plugin import Backend

# Each kind with limit 3 and no refill to speak of within a test (a day-long window/period).
DAY = 86400.0
SYNC: dict[str, Callable[[Any, int], RateLimiter]] = {
    "fixed": lambda c, n: FixedWindow(c, n, DAY),
    "log": lambda c, n: SlidingLog(c, n, DAY),
    "sliding": lambda c, n: SlidingWindow(c, n, DAY),
    "bucket": lambda c, n: TokenBucket(c, n, 1e-6),
    "gcra": lambda c, n: GCRA(c, 1, DAY, burst=n),
}
ASYNC: dict[str, Callable[[Any, int], Any]] = {
    "fixed": lambda c, n: AsyncFixedWindow(c, n, DAY),
    "log": lambda c, n: AsyncSlidingLog(c, n, DAY),
    "sliding": lambda c, n: AsyncSlidingWindow(c, n, DAY),
    "bucket": lambda c, n: AsyncTokenBucket(c, n, 1e-6),
    "gcra": lambda c, n: AsyncGCRA(c, 1, DAY, burst=n),
}
KINDS = list(SYNC)


def away_from_day_edge(client: Any) -> None:
    """Window-based limiters align windows to the epoch: do not start a test just before one."""
    seconds, _ = client.time()
    left = DAY - seconds % DAY
    if left < 120:
        time.sleep(left + 0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_admits_limit_then_refuses(client: Any, prefix: str, kind: str) -> None:
    away_from_day_edge(client)
    limiter = SYNC[kind](client, 3)
    decisions = [limiter.hit(f"{prefix}:u") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    assert all(d.retry_after == 0.0 for d in decisions[:3])
    assert all(d.retry_after > 0 for d in decisions[3:])
    assert all(d.reset_after > 0 for d in decisions)
    # another key is independent
    assert limiter.hit(f"{prefix}:other").allowed


@pytest.mark.parametrize("kind", KINDS)
def test_peek_consumes_nothing_and_refusal_consumes_nothing(
    client: Any, prefix: str, kind: str
) -> None:
    away_from_day_edge(client)
    limiter = SYNC[kind](client, 3)
    key = f"{prefix}:u"
    fresh = limiter.peek(key)
    assert fresh == Decision(True, 3, 3, 0.0, 0.0)
    assert client.exists(*limiter.keys(key)) == 0  # peek wrote nothing
    assert limiter.hit(key, 2).remaining == 1
    assert limiter.peek(key).remaining == 1
    refused = limiter.hit(key, 2)
    assert not refused.allowed
    assert refused.remaining == 1
    assert limiter.hit(key).allowed  # the refused hit of 2 consumed nothing
    assert not limiter.peek(key).allowed
    limiter.reset(key)
    assert limiter.peek(key) == Decision(True, 3, 3, 0.0, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_decodes_replies_gets_the_same_decisions(
    backend: Backend, prefix: str, kind: str
) -> None:
    """A single limit's script packs its reply into one string for a client that keeps bytes,
    and answers an array to one made with ``decode_responses=True``: both decide alike."""
    client = backend.client()
    away_from_day_edge(client)
    packed = SYNC[kind](client, 3)
    arrays = SYNC[kind](backend.client(decode_responses=True), 3)
    key = f"{prefix}:u"
    for limiter in (packed, arrays, packed, arrays, arrays):  # one state, shared
        limiter.hit(key)
    peeked = [packed.peek(key), arrays.peek(key)]
    assert [(d.allowed, d.remaining, d.limit) for d in peeked] == [(False, 0, 3)] * 2
    refused = [packed.hit(key), arrays.hit(key)]
    assert [(d.allowed, d.remaining, d.limit) for d in refused] == [(False, 0, 3)] * 2
    assert all(d.retry_after > 0 for d in refused)


@pytest.mark.parametrize("kind", KINDS)
def test_enforce_raises_with_retry_after(client: Any, prefix: str, kind: str) -> None:
    away_from_day_edge(client)
    limiter = SYNC[kind](client, 1)
    assert limiter.enforce(f"{prefix}:u").allowed
    with pytest.raises(RateLimitedError) as info:
        limiter.enforce(f"{prefix}:u")
    assert info.value.retry_after > 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_gets_a_ttl(client: Any, prefix: str, kind: str) -> None:
    """Scenario 12 (no immortal keys): every key a hit writes carries an expiry."""
    limiter = SYNC[kind](client, 5)
    for i in range(8):
        limiter.hit(f"{prefix}:u", 1 + i % 2)
        for key in limiter.keys(f"{prefix}:u"):
            assert client.pttl(key) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_keys_expire_when_idle(client: Any, prefix: str, kind: str) -> None:
    short: dict[str, RateLimiter] = {
        "fixed": FixedWindow(client, 2, 0.2),
        "log": SlidingLog(client, 2, 0.2),
        "sliding": SlidingWindow(client, 2, 0.2),
        "bucket": TokenBucket(client, 2, 10),
        "gcra": GCRA(client, 2, 0.2),
    }
    limiter = short[kind]
    for _ in range(3):
        limiter.hit(f"{prefix}:u")
    (key,) = limiter.keys(f"{prefix}:u")
    # the longest TTL any of them sets here is 2 windows (sliding window) = 0.4 s. At a fixed
    # window's very end the key has under 1 ms left (PTTL 0) or is already gone (-2): both
    # mean it expires by itself; -1 (no TTL) never passes
    ttl = client.pttl(key)
    assert ttl != -1
    assert -2 <= ttl <= 400
    deadline = time.monotonic() + 10
    while client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.exists(key) == 0
    assert limiter.hit(f"{prefix}:u").remaining == 1


@pytest.mark.parametrize("kind", KINDS)
def test_one_command_per_hit_peek_and_reset(backend: Backend, prefix: str, kind: str) -> None:
    limiter = SYNC[kind](backend.client(), 2)
    limiter.hit(f"{prefix}:u")  # the script is cached from now on
    calls: list[Callable[[], Decision]] = [
        lambda: limiter.hit(f"{prefix}:u"),
        lambda: limiter.hit(f"{prefix}:u"),  # refused
        lambda: limiter.peek(f"{prefix}:u"),
    ]
    for call in calls:
        with backend.counter() as seen:
            call()
        assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        limiter.reset(f"{prefix}:u")
    assert seen.names == ["DEL"]


@pytest.mark.parametrize("kind", KINDS)
async def test_async_one_command_per_hit_and_peek(backend: Backend, prefix: str, kind: str) -> None:
    client = backend.async_client()
    limiter = ASYNC[kind](client, 2)
    assert (await limiter.hit(f"{prefix}:u")).allowed
    with backend.counter() as seen:
        decision = await limiter.hit(f"{prefix}:u")
    assert seen.names == ["EVALSHA"]
    assert decision.remaining == 0
    with backend.counter() as seen:
        peeked = await limiter.peek(f"{prefix}:u")
    assert seen.names == ["EVALSHA"]
    assert not peeked.allowed
    with pytest.raises(RateLimitedError):
        await limiter.enforce(f"{prefix}:u")
    await limiter.reset(f"{prefix}:u")
    assert (await limiter.peek(f"{prefix}:u")).remaining == 2
    await client.aclose()


def test_script_reloads_after_flush(backend: Backend, prefix: str) -> None:
    limiter = FixedWindow(backend.client(), 5, DAY)
    limiter.hit(f"{prefix}:u")
    for node in backend.servers:
        node.client().script_flush()
    with backend.counter() as seen:
        assert limiter.hit(f"{prefix}:u").remaining == 3
    assert seen.names == ["EVALSHA", "EVAL"]


# --- retry_after honesty ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda c: SlidingLog(c, 3, 0.8), id="log"),
        pytest.param(lambda c: TokenBucket(c, 3, 2.5), id="bucket"),
        pytest.param(lambda c: GCRA(c, 2, 0.8, burst=3), id="gcra"),
        pytest.param(lambda c: FixedWindow(c, 3, 0.8), id="fixed"),
        pytest.param(lambda c: SlidingWindow(c, 3, 0.8), id="sliding"),
    ],
)
def test_retry_after_is_honest(client: Any, prefix: str, make: Any) -> None:
    limiter: RateLimiter = make(client)
    key = f"{prefix}:u"
    for _round in range(2):
        # fill the limit and take a refusal with time left: one at a window's very edge may be
        # followed at once by an admission (the oldest hit just left), and then "early" below
        # would be admitted and fill the limit again; every limiter here reaches one within
        # about a window
        refused = limiter.hit(key)
        while refused.allowed or refused.retry_after < 0.3:
            refused = limiter.hit(key)
        # well before retry_after: still refused (the hit above consumed nothing)
        time.sleep(refused.retry_after * 0.05)
        early = limiter.hit(key)
        assert not early.allowed
        # right after retry_after: admitted
        time.sleep(early.retry_after)
        assert limiter.hit(key).allowed


async def test_async_retry_after_is_honest(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    for limiter in (
        AsyncSlidingLog(client, 2, 0.6),
        AsyncTokenBucket(client, 2, 2.5),
        AsyncGCRA(client, 2, 0.8),
    ):
        key = f"{prefix}:u"
        while (await limiter.hit(key)).allowed:
            pass
        refused = await limiter.hit(key)
        assert not refused.allowed
        assert refused.retry_after >= 0.3
        await asyncio.sleep(refused.retry_after * 0.05)
        early = await limiter.hit(key)
        assert not early.allowed
        await asyncio.sleep(early.retry_after)
        assert (await limiter.hit(key)).allowed
    await client.aclose()


# --- multi-limit --------------------------------------------------------------------------


def test_multi_limit_consumes_from_none_when_one_refuses(backend: Backend, prefix: str) -> None:
    client = backend.client()
    away_from_day_edge(client)
    per_burst = TokenBucket(client, 10, 1e-6)
    per_day = FixedWindow(client, 1000, DAY)
    both = MultiLimit([per_burst, per_day])
    key = f"{prefix}:u"
    decisions = [both.hit(key) for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert decisions[0] == Decision(True, 10, 9, 0.0, decisions[0].reset_after)
    assert per_day.peek(key).remaining == 990  # the refused hits took nothing from the day
    assert per_burst.peek(key).remaining == 0
    # the day limit can refuse too, and then the bucket keeps its tokens
    per_burst.reset(key)
    client.set(per_day.keys(key)[0], 1000, keepttl=True)  # the window's counter: full
    refused = both.hit(key)
    assert not refused.allowed
    assert refused.limit == 1000
    assert per_burst.peek(key).remaining == 10
    each = both.hit_all(key)
    assert [d.allowed for d in each] == [True, False]
    both.reset(key)
    assert [client.exists(k) for k in both.keys(key)] == [0, 0]


def test_multi_limit_is_one_command(backend: Backend, prefix: str) -> None:
    client = backend.client()
    both = MultiLimit([SlidingLog(client, 10, 1.0), GCRA(client, 1000, 3600.0)])
    both.hit(f"{prefix}:u")
    with backend.counter() as seen:
        both.hit(f"{prefix}:u")
        both.peek(f"{prefix}:u")
    assert seen.names == ["EVALSHA", "EVALSHA"]
    keys = both.keys(f"{prefix}:u")
    assert len({k.split(b"}")[0] for k in keys}) == 1  # one hash tag: one cluster slot


async def test_async_multi_limit(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    both = AsyncMultiLimit([AsyncFixedWindow(client, 2, DAY), AsyncTokenBucket(client, 5, 1e-6)])
    results = [await both.hit(f"{prefix}:u") for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert [d.remaining for d in await both.hit_all(f"{prefix}:u")] == [0, 3]
    await client.aclose()


def test_multi_limit_refuses_shared_keys_and_mixed_flavours(client: Any) -> None:
    with pytest.raises(ConfigurationError, match="distinct names"):
        MultiLimit([FixedWindow(client, 2, 1), FixedWindow(client, 2, 1)])
    assert MultiLimit([FixedWindow(client, 2, 1), FixedWindow(client, 2, 1, name="other")])
    with pytest.raises(ConfigurationError):
        MultiLimit([])
    with pytest.raises(TypeError):
        MultiLimit([AsyncFixedWindow.__new__(AsyncFixedWindow)])  # type: ignore[list-item]


def test_cost_above_smallest_limit_is_refused_for_multi(backend: Backend) -> None:
    client = backend.client()
    both = MultiLimit([TokenBucket(client, 10, 1.0), FixedWindow(client, 3, 1.0)])
    with backend.counter() as seen, pytest.raises(ConfigurationError, match="capacity 3"):
        both.hit("k", 4)
    assert seen.count == 0


# --- bad input ----------------------------------------------------------------------------

BAD_CONSTRUCTORS: list[tuple[str, Callable[[Any], object]]] = [
    ("limit 0", lambda c: FixedWindow(c, 0, 1)),
    ("limit -1", lambda c: SlidingLog(c, -1, 1)),
    ("limit float", lambda c: SlidingWindow(c, 2.5, 1)),  # type: ignore[arg-type]
    ("limit bool", lambda c: FixedWindow(c, True, 1)),
    ("window 0", lambda c: FixedWindow(c, 5, 0)),
    ("window -1", lambda c: SlidingLog(c, 5, -1)),
    ("window nan", lambda c: SlidingWindow(c, 5, float("nan"))),
    ("window inf", lambda c: FixedWindow(c, 5, float("inf"))),
    ("window tiny", lambda c: FixedWindow(c, 5, 1e-5)),
    ("window bool", lambda c: FixedWindow(c, 5, True)),
    ("window str", lambda c: FixedWindow(c, 5, "1")),  # type: ignore[arg-type]
    ("capacity 0", lambda c: TokenBucket(c, 0, 1.0)),
    ("rate 0", lambda c: TokenBucket(c, 5, 0)),
    ("rate nan", lambda c: TokenBucket(c, 5, float("nan"))),
    ("rate -1", lambda c: TokenBucket(c, 5, -1.0)),
    ("gcra burst 0", lambda c: GCRA(c, 5, 1.0, burst=0)),
    ("gcra burst float", lambda c: GCRA(c, 5, 1.0, burst=1.5)),  # type: ignore[arg-type]
    ("gcra period 0", lambda c: GCRA(c, 5, 0)),
    ("name with brace", lambda c: FixedWindow(c, 5, 1, name="a{b")),
    ("name empty", lambda c: FixedWindow(c, 5, 1, name="")),
]


@pytest.mark.parametrize(
    "make", [m for _, m in BAD_CONSTRUCTORS], ids=[i for i, _ in BAD_CONSTRUCTORS]
)
def test_bad_configuration_fails_before_any_io(backend: Backend, make: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        make(client)
    assert seen.count == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("key", "cost"),
    [
        ("k", 0),
        ("k", -1),
        ("k", 1.0),
        ("k", True),
        ("k", "1"),
        ("k", 4),  # above the limit of 3: could never pass
        ("", 1),
        (None, 1),
        (42, 1),
        (b"a{b", 1),
        ("a}b", 1),
        ("a\x00b", 1),
        ("x" * 2000, 1),
    ],
)
def test_bad_hit_fails_before_any_io(backend: Backend, kind: str, key: Any, cost: Any) -> None:
    limiter = SYNC[kind](backend.client(), 3)
    backend.client().ping()
    with backend.counter() as seen:
        with pytest.raises(ConfigurationError):
            limiter.hit(key, cost)
        with pytest.raises(ConfigurationError):
            limiter.enforce(key, cost)
        if type(cost) is int and cost == 1:  # the key is the bad part
            with pytest.raises(ConfigurationError):
                limiter.peek(key)
            with pytest.raises(ConfigurationError):
                limiter.reset(key)
    assert seen.count == 0


def test_cost_above_capacity_names_the_reason(client: Any) -> None:
    with pytest.raises(ConfigurationError, match="cost 11 exceeds the limit's capacity 10"):
        TokenBucket(client, 10, 1.0).hit("k", 11)


def test_sync_client_refused_by_async_class(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncSlidingLog(backend.client(), 5, 1.0)  # type: ignore[arg-type]


@pytest.mark.backends("cluster")
def test_cluster_keys_share_a_slot(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    both = MultiLimit([SlidingLog(client, 3, 1.0), TokenBucket(client, 3, 1.0)])
    for i in range(20):
        assert both.hit(f"{prefix}:{i}").allowed  # keys spread over slots, never CROSSSLOT
    slots = {client.keyslot(both.keys(f"{prefix}:{i}")[0]) for i in range(20)}
    assert len(slots) > 1
