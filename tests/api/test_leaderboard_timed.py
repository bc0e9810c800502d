"""TimedLeaderboard: per-period boards that expire on their own, and the combined snapshot.

No date here is written down: every one is derived from the clock when the test runs (today,
yesterday, next year's ISO week 1, ...), so the module passes on any day; `make test-calendar`
runs it with the whole process and its servers one year ahead and one year back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from redis_patterns import (
    AsyncTimedLeaderboard,
    ConfigurationError,
    EmbeddedServer,
    PeriodExpiredError,
    TimedLeaderboard,
)
from redis_patterns.testing.pytest_plugin import FAKETIME_LIB, Backend, faketime_or_skip

UTC = timezone.utc
DAY_MS = 86_400_000


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def now_away_from_midnight() -> datetime:
    """Now (UTC), but not in the last minute of a day: a test's "today" must not turn into
    yesterday between computing it and the server judging a write against it."""
    now = datetime.now(UTC)
    left = utc_midnight(now.date() + timedelta(days=1)) - now
    if left < timedelta(minutes=1):
        time.sleep(left.total_seconds() + 0.1)
        now = datetime.now(UTC)
    return now


def test_the_clock_shift_is_real(backend: Backend) -> None:
    """Under `make test-calendar`, this process and its servers really run a year off.

    The target passes the real time and the offset in REDIS_PATTERNS_CLOCK_SHIFT as
    ``"<real unix time> <days>"``; a run whose shift silently did not apply fails here.
    """
    shift = os.environ.get("REDIS_PATTERNS_CLOCK_SHIFT")
    if not shift:
        pytest.skip("only under `make test-calendar` (REDIS_PATTERNS_CLOCK_SHIFT unset)")
    real, days = (float(part) for part in shift.split())
    expected = real + days * 86400
    assert time.time() == pytest.approx(expected, abs=3600)
    shifted_days = (datetime.now(UTC).date() - datetime.fromtimestamp(real, UTC).date()).days
    assert abs(shifted_days - days) <= 1
    for host, port in backend.nodes:  # each node itself, not the cluster client: all shifted
        with redis.Redis(host=host, port=port) as node:
            assert node.time()[0] == pytest.approx(expected, abs=3600), (host, port)


def test_period_keys_share_one_hash_tag(client: Any, prefix: str) -> None:
    # ISO 8601: 4 January is always in week 1, so week 1 of next year starts on the Monday of
    # that week; 28 December is always in the last week of its year.
    year = datetime.now(UTC).year + 1
    jan4 = datetime(year, 1, 4, 12, tzinfo=UTC)
    week1 = utc_midnight((jan4 - timedelta(days=jan4.weekday())).date())
    for period, at, suffix in [
        ("day", jan4, f"day:{year}-01-04"),
        ("week", jan4, f"week:{year}-W01"),
        ("week", week1 + timedelta(days=6, hours=11), f"week:{year}-W01"),  # its Sunday
        ("month", jan4, f"month:{year}-01"),
    ]:
        timed = TimedLeaderboard(client, prefix, period=period)  # type: ignore[arg-type]
        assert timed.board(at=at).key == f"{{leaderboard:{prefix}}}:{suffix}".encode()
    weekly = TimedLeaderboard(client, prefix, period="week")
    before = weekly.board(at=week1 - timedelta(minutes=1)).key
    assert before == weekly.board(at=datetime(year - 1, 12, 28, tzinfo=UTC)).key
    assert before != weekly.board(at=week1).key


def test_writes_go_to_their_period_and_expire(client: Any, prefix: str) -> None:
    now = now_away_from_midnight()
    timed = TimedLeaderboard(client, prefix, period="day", keep=2)
    assert timed.add("alice", 10, at=now) is True
    assert timed.incr("alice", 5, at=now) == 15.0
    assert timed.add("alice", 1, only="higher", at=now) is False
    assert timed.incr("bob", 7, at=now + timedelta(days=1)) == 7.0
    today, tomorrow = timed.board(at=now), timed.board(at=now + timedelta(days=1))
    assert today.key.endswith(f"day:{now.date().isoformat()}".encode())
    assert [(e.member, e.score) for e in today.top(5)] == [("alice", 15.0)]
    assert [(e.member, e.score) for e in tomorrow.top(5)] == [("bob", 7.0)]
    # Expires keep=2 days after its own day ends: at midnight UTC three days after its start.
    assert client.pexpiretime(today.key) == ms(utc_midnight(now.date() + timedelta(days=3)))
    assert client.pexpiretime(tomorrow.key) == ms(utc_midnight(now.date() + timedelta(days=4)))


def test_weeks_and_months_boundaries(client: Any, prefix: str) -> None:
    # Next week's Monday 00:00 UTC is a week boundary whatever today is.
    today = datetime.now(UTC).date()
    monday = utc_midnight(today + timedelta(days=7 - today.weekday()))
    sunday = monday - timedelta(minutes=1)
    weekly = TimedLeaderboard(client, prefix + "w", period="week")
    weekly.incr("a", 1, at=sunday)
    weekly.incr("a", 1, at=monday)
    assert weekly.board(at=sunday).score("a") == 1.0
    assert weekly.board(at=monday).score("a") == 1.0
    assert weekly.board(at=monday + timedelta(days=6, hours=23)).key == weekly.board(monday).key
    # keep=7 weeks after the week ends: 8 weeks after its Monday.
    expected = ms(monday + timedelta(weeks=8))
    assert client.pexpiretime(weekly.board(at=monday).key) == expected
    # Next year's 31 December: the last day of its month; keep=1 retains it through January.
    year = today.year + 1
    monthly = TimedLeaderboard(client, prefix + "m", period="month", keep=1)
    monthly.incr("a", 1, at=datetime(year, 12, 31, 23, 0))
    board = monthly.board(at=datetime(year, 12, 1))
    assert board.key.endswith(f"month:{year}-12".encode())
    assert board.score("a") == 1.0
    assert client.pexpiretime(board.key) == ms(datetime(year + 1, 2, 1, tzinfo=UTC))


def test_a_future_period_is_written_and_expires_after_its_own_end(client: Any, prefix: str) -> None:
    """Writing ahead (``at`` a year from now) is allowed: that board simply lives longer."""
    ahead = datetime.now(UTC) + timedelta(days=365)
    timed = TimedLeaderboard(client, prefix, period="day", keep=2)
    assert timed.incr("a", 3, at=ahead) == 3.0
    board = timed.board(at=ahead)
    assert board.score("a") == 3.0
    assert client.pexpiretime(board.key) == ms(utc_midnight(ahead.date() + timedelta(days=3)))
    assert client.pttl(board.key) > 365 * DAY_MS


def test_combined_sums_the_last_periods_in_one_script(backend: Backend, prefix: str) -> None:
    client = backend.client()
    now = now_away_from_midnight()
    timed = TimedLeaderboard(client, prefix, period="day", keep=6, ties="competition")
    for days_ago, scores in enumerate([{"a": 5, "b": 1}, {"a": 1, "c": 9}, {"b": 20}]):
        for member, score in scores.items():
            timed.add(member, score, at=now - timedelta(days=days_ago))
    timed.add("old", 1000, at=now - timedelta(days=5))  # retained, but outside the last 3 days
    timed.combined(3, at=now)
    with backend.counter() as seen:
        week = timed.combined(3, at=now)
    assert seen.names == ["EVALSHA"]
    assert [(e.rank, e.member, e.score) for e in week.top(10)] == [
        (1, "b", 21.0),
        (2, "c", 9.0),
        (3, "a", 6.0),
    ]
    assert client.pttl(week.key) > 0
    # The snapshot is reused until it expires; rebuild=True picks up new scores now.
    timed.add("a", 100, at=now)
    assert timed.combined(3, at=now).score("a") == 6.0
    assert timed.combined(3, at=now, rebuild=True).score("a") == 101.0


# --- writes past retention ------------------------------------------------------------------


def _month_before(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def _cases(now: datetime) -> dict[str, tuple[int, datetime, datetime, str, datetime]]:
    """Per period, with keep=1 or 2: (keep, the oldest period still retained, the one before
    it, that one's label, the end of its retention), all relative to ``now``."""
    today = now.date()
    monday = today - timedelta(days=today.weekday())
    this_month = today.replace(day=1)
    last_month = _month_before(this_month)
    two_months_ago = _month_before(last_month)
    expired_week = datetime.combine(monday - timedelta(weeks=2), now.timetz())
    return {
        # day, keep=2: today-2 lives until tomorrow 00:00; today-3 ended today 00:00.
        "day": (
            2,
            now - timedelta(days=2),
            now - timedelta(days=3),
            (today - timedelta(days=3)).isoformat(),
            utc_midnight(today),
        ),
        # week, keep=1: last week lives until next Monday; the week before ended this Monday.
        "week": (
            1,
            now - timedelta(weeks=1),
            expired_week,
            "{}-W{:02}".format(*expired_week.isocalendar()[:2]),
            utc_midnight(monday),
        ),
        # month, keep=1: last month lives through this one; the month before ended on the 1st.
        "month": (
            1,
            utc_midnight(last_month),
            utc_midnight(two_months_ago) + timedelta(hours=12),
            f"{two_months_ago.year}-{two_months_ago.month:02}",
            utc_midnight(this_month),
        ),
    }


WRITES: dict[str, Callable[[Any, datetime], Any]] = {
    "add": lambda t, at: t.add("m", 1, at=at),
    "incr": lambda t, at: t.incr("m", 1, at=at),
}


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_a_write_past_retention_raises_and_stores_nothing(
    backend: Backend, prefix: str, period: str, write: str
) -> None:
    client = backend.client()
    keep, oldest, expired, label, end = _cases(now_away_from_midnight())[period]
    timed = TimedLeaderboard(client, prefix, period=period, keep=keep)  # type: ignore[arg-type]
    # The oldest retained period still takes writes (and loads the script).
    WRITES[write](timed, oldest)
    assert timed.board(at=oldest).score("m") == 1.0
    assert client.pttl(timed.board(at=oldest).key) > 0
    key = timed.board(at=expired).key
    with backend.counter() as seen, pytest.raises(PeriodExpiredError) as caught:
        WRITES[write](timed, expired)
    assert seen.names == ["EVALSHA"]
    assert client.exists(key) == 0
    assert client.zcard(key) == 0
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.period == label
    assert error.retention_end == end
    assert end <= error.server_time < end + timedelta(days=32)
    assert label in str(error)
    assert end.isoformat() in str(error)


@pytest.mark.parametrize("write", ["add", "incr"])
async def test_async_write_past_retention_raises_and_stores_nothing(
    backend: Backend, async_client: Any, prefix: str, write: str
) -> None:
    client = async_client
    now = now_away_from_midnight()
    timed = AsyncTimedLeaderboard(client, prefix, period="day", keep=2)
    kept, gone = now - timedelta(days=2), now - timedelta(days=3)

    async def write_at(at: datetime) -> Any:
        if write == "add":
            return await timed.add("m", 1, at=at)
        return await timed.incr("m", 1, at=at)

    assert await write_at(kept) in (True, 1.0)
    key = timed.board(at=gone).key
    with backend.counter() as seen, pytest.raises(PeriodExpiredError) as caught:
        await write_at(gone)
    assert seen.names == ["EVALSHA"]
    assert await client.exists(key) == 0
    assert caught.value.period == (now.date() - timedelta(days=3)).isoformat()
    assert caught.value.retention_end == utc_midnight(now.date())


@pytest.fixture
def server_a_year_ahead(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Valkey server whose clock (libfaketime) runs 400 days ahead of this process's."""
    faketime_or_skip()
    offset = 400 * 86400
    with monkeypatch.context() as patched:  # only the server process inherits these
        patched.setenv("LD_PRELOAD", FAKETIME_LIB)
        # Relative to this process's own (maybe already shifted) clock: an absolute start.
        start = datetime.fromtimestamp(time.time() + offset, UTC)
        patched.setenv("FAKETIME", "@" + start.strftime("%Y-%m-%d %H:%M:%S"))
        server = EmbeddedServer().start()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()


def test_the_server_clock_decides_not_the_clients(server_a_year_ahead: EmbeddedServer) -> None:
    client = server_a_year_ahead.client()
    server_now = datetime.fromtimestamp(client.time()[0], UTC)
    assert server_now - datetime.now(UTC) > timedelta(days=399)
    timed = TimedLeaderboard(client, "clock", period="day", keep=7)
    # Today by this process's clock is 400 days old for the server: refused, nothing stored.
    with pytest.raises(PeriodExpiredError) as caught:
        timed.incr("m", 1)
    assert caught.value.server_time >= server_now
    assert client.exists(timed.board().key) == 0
    # The server's own today is retained.
    assert timed.incr("m", 1, at=server_now) == 1.0
    client.close()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.add("m", float("nan")),
        lambda t: t.add("", 1),
        lambda t: t.incr("m", float("inf")),
        lambda t: t.add("m", 1, at="2026-11-26"),
        lambda t: t.add("m", 1, at=datetime.max),  # its board would expire after year 9999
        lambda t: t.incr("m", 1, at=datetime(9999, 12, 28, tzinfo=UTC)),
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
    with backend.counter() as seen, pytest.raises(ConfigurationError) as caught:
        call(timed)
    assert not isinstance(caught.value, PeriodExpiredError)
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
    now = now_away_from_midnight()
    timed = AsyncTimedLeaderboard(client, prefix, period="week")
    await timed.incr("a", 2, at=now)
    await timed.add("b", 3, at=now - timedelta(days=7))
    assert await timed.board(at=now).rank("a") == 1
    both = await timed.combined(2, at=now)
    assert [e.member for e in await both.top(2)] == ["b", "a"]
    await client.aclose()
