"""Durations in every pattern: right answers at the longest accepted (10^9 s); one ms more fails.

The bound lives in `_validate.duration_ms`, shared by all patterns; the limiters' own boundary
tests are in ``test_ratelimit_bounds.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from redis_patterns import Cache, ConfigurationError, Lock, SessionStore, StreamQueue
from redis_patterns._validate import MAX_DURATION_MS
from redis_patterns.testing.pytest_plugin import Backend

LONGEST = MAX_DURATION_MS / 1000
SLACK_MS = 60_000  # a loaded machine between the write and the PTTL


def test_lock_at_the_longest_ttl(backend: Backend, prefix: str) -> None:
    client = backend.client()
    lock = Lock(client, f"{prefix}:job", ttl=LONGEST)
    assert lock.acquire()
    key = lock.key
    assert MAX_DURATION_MS - SLACK_MS < client.pttl(key) <= MAX_DURATION_MS
    lock.extend(LONGEST)
    assert MAX_DURATION_MS - SLACK_MS < client.pttl(key) <= MAX_DURATION_MS
    lock.release()
    assert client.exists(key) == 0


def test_cache_at_the_longest_ttls(backend: Backend, prefix: str) -> None:
    client = backend.client()
    cache = Cache(client, prefix, ttl=LONGEST, jitter=0.0, stale_ttl=LONGEST)
    cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    assert cache.get_or_load("m", lambda: 5, ttl=LONGEST) == 5
    key = cache.key_of("k")
    # fresh for the ttl, then served stale for stale_ttl more
    assert 2 * MAX_DURATION_MS - SLACK_MS < client.pttl(key) <= 2 * MAX_DURATION_MS


def test_sessions_at_the_longest_lifetimes(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, prefix, idle_ttl=LONGEST, absolute_ttl=LONGEST)
    session = store.create({"x": 1}, user_id="u")
    found = store.get(session.id)
    assert found is not None
    assert found["x"] == 1
    assert LONGEST - SLACK_MS / 1000 < found.ttl <= LONGEST
    for key in (store._core._key_of(session.id), store._core.index_key("u")):
        assert MAX_DURATION_MS - SLACK_MS < client.pttl(key) <= MAX_DURATION_MS


def test_stream_dedupe_at_the_longest_ttl(backend: Backend, prefix: str) -> None:
    queue = StreamQueue(backend.client(), f"{prefix}:q", dedupe_ttl=LONGEST)
    first = queue.add({"a": 1}, idempotency_key="once")
    assert queue.add({"a": 1}, idempotency_key="once") == first


ONE_MS_TOO_LONG: list[tuple[str, Callable[[Any], object]]] = [
    ("lock ttl", lambda c: Lock(c, "job", ttl=LONGEST + 0.001)),
    (
        "lock ttl timedelta",
        lambda c: Lock(c, "job", ttl=timedelta(seconds=LONGEST, milliseconds=1)),
    ),
    ("cache ttl", lambda c: Cache(c, "ns", ttl=LONGEST + 0.001)),
    ("cache stale", lambda c: Cache(c, "ns", stale_ttl=LONGEST + 0.001)),
    ("session idle", lambda c: SessionStore(c, idle_ttl=LONGEST + 0.001)),
    ("session absolute", lambda c: SessionStore(c, absolute_ttl=LONGEST + 0.001)),
    ("stream dedupe", lambda c: StreamQueue(c, "q", dedupe_ttl=LONGEST + 0.001)),
]


@pytest.mark.parametrize(
    "make", [m for _, m in ONE_MS_TOO_LONG], ids=[i for i, _ in ONE_MS_TOO_LONG]
)
def test_one_ms_more_is_refused_before_io(backend: Backend, make: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError, match="at most 1000000000 s"):
        make(client)
    assert seen.count == 0
