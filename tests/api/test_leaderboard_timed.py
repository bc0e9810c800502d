"""TimedLeaderboard: per-period boards that expire on their own, and the combined snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from redis_patterns import AsyncTimedLeaderboard, ConfigurationError, TimedLeaderboard
from redis_patterns.testing.pytest_plugin import Backend

DAY = datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc)  # a Thursday, ISO week 48


def test_period_keys_share_one_hash_tag(client: Any, prefix: str) -> None:
    for period, suffix in [
        ("day", "day:2026-11-26"),
        ("week", "week:2026-W48"),
        ("month", "month:2026-11"),
    ]:
        timed = TimedLeaderboard(client, prefix, period=period)  # type: ignore[arg-type]
        assert timed.board(at=DAY).key == f"{{leaderboard:{prefix}}}:{suffix}".encode()


def test_writes_go_to_their_period_and_expire(client: Any, prefix: str) -> None:
    timed = TimedLeaderboard(client, prefix, period="day", keep=2)
    assert timed.add("alice", 10, at=DAY) is True
    assert timed.incr("alice", 5, at=DAY) == 15.0
    assert timed.add("alice", 1, only="higher", at=DAY) is False
    assert timed.incr("bob", 7, at=DAY + timedelta(days=1)) == 7.0
    today, tomorrow = timed.board(at=DAY), timed.board(at=DAY + timedelta(days=1))
    assert [(e.member, e.score) for e in today.top(5)] == [("alice", 15.0)]
    assert [(e.member, e.score) for e in tomorrow.top(5)] == [("bob", 7.0)]
    # Expires keep=2 days after its own day ends: at 2026-11-29 00:00 UTC.
    expected = int(datetime(2026, 11, 29, tzinfo=timezone.utc).timestamp() * 1000)
    assert client.pexpiretime(today.key) == expected


def test_weeks_and_months_boundaries(client: Any, prefix: str) -> None:
    weekly = TimedLeaderboard(client, prefix + "w", period="week")
    sunday, monday = datetime(2026, 11, 29, 23, 59), datetime(2026, 11, 30, 0, 0)
    weekly.incr("a", 1, at=sunday)
    weekly.incr("a", 1, at=monday)
    assert weekly.board(at=DAY).score("a") == 1.0
    assert weekly.board(at=monday).key.endswith(b"week:2026-W49")
    monthly = TimedLeaderboard(client, prefix + "m", period="month", keep=1)
    monthly.incr("a", 1, at=datetime(2026, 12, 31, 23, 0))
    board = monthly.board(at=datetime(2026, 12, 1))
    assert board.key.endswith(b"month:2026-12")
    expected = int(datetime(2027, 2, 1, tzinfo=timezone.utc).timestamp() * 1000)
    assert client.pexpiretime(board.key) == expected


def test_combined_sums_the_last_periods_in_one_script(backend: Backend, prefix: str) -> None:
    client = backend.client()
    timed = TimedLeaderboard(client, prefix, period="day", keep=6, ties="competition")
    for days_ago, scores in enumerate([{"a": 5, "b": 1}, {"a": 1, "c": 9}, {"b": 20}]):
        for member, score in scores.items():
            timed.add(member, score, at=DAY - timedelta(days=days_ago))
    timed.add("old", 1000, at=DAY - timedelta(days=7))  # outside the last 3 days
    timed.combined(3, at=DAY)
    with backend.counter() as seen:
        week = timed.combined(3, at=DAY)
    assert seen.names == ["EVALSHA"]
    assert [(e.rank, e.member, e.score) for e in week.top(10)] == [
        (1, "b", 21.0),
        (2, "c", 9.0),
        (3, "a", 6.0),
    ]
    assert client.pttl(week.key) > 0
    # The snapshot is reused until it expires; rebuild=True picks up new scores now.
    timed.add("a", 100, at=DAY)
    assert timed.combined(3, at=DAY).score("a") == 6.0
    assert timed.combined(3, at=DAY, rebuild=True).score("a") == 101.0


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.add("m", float("nan")),
        lambda t: t.add("", 1),
        lambda t: t.incr("m", float("inf")),
        lambda t: t.add("m", 1, at="2026-11-26"),
        lambda t: t.add("m", 1, only="up"),
        lambda t: t.combined(0),
        lambda t: t.combined(9),  # keep=7 retains 8 periods
        lambda t: t.combined(3, cache=0),
        lambda t: t.combined(3, cache=float("nan")),
    ],
)
def test_bad_input_fails_before_any_io(backend: Backend, call: Any) -> None:
    client = backend.client()
    client.ping()
    timed = TimedLeaderboard(client, "bad")
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        call(timed)
    assert seen.count == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"period": "hour"}, {"keep": 0}, {"keep": 1.5}, {"ties": "dense"}, {"ties": "earliest"}],
)
def test_bad_construction(client: Any, kwargs: Any) -> None:
    with pytest.raises(ConfigurationError):
        TimedLeaderboard(client, "x", **kwargs)


async def test_async_timed(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    timed = AsyncTimedLeaderboard(client, prefix, period="week")
    await timed.incr("a", 2, at=DAY)
    await timed.add("b", 3, at=DAY - timedelta(days=7))
    assert await timed.board(at=DAY).rank("a") == 1
    both = await timed.combined(2, at=DAY)
    assert [e.member for e in await both.top(2)] == ["b", "a"]
    await client.aclose()
