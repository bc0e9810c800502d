"""Leaderboard plans without a server: ranking of slices, validation, the effects yielded."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from redis_patterns import ConfigurationError, Entry, Page, PeriodExpiredError
from redis_patterns._core.leaderboard import LeaderboardCore, TimedLeaderboardCore, check_score
from redis_patterns._plan import Command, Eval, run_canned


def test_competition_page_starting_mid_tie_takes_its_rank_from_the_server() -> None:
    core = LeaderboardCore("b", "competition")
    # Page 2 of size 3 on scores 9, 7, 7 | 7, 7, 5: one member (the 9) scores above 7.
    reply = [6, 1, b"d", b"7", b"e", b"7", b"f", b"5"]
    page, effects = run_canned(core.page(2, 3), [reply])
    assert isinstance(effects[0], Eval)
    assert effects[0].args == (3, 5, 1)
    assert page == Page((Entry(2, "d", 7.0), Entry(2, "e", 7.0), Entry(6, "f", 5.0)), 2, 3, 6, 2)


def test_ordinal_ranks_are_positions() -> None:
    core = LeaderboardCore("b", "ordinal")
    reply = [6, -1, b"d", b"7", b"e", b"7"]
    page, _ = run_canned(core.page(2, 2), [reply])
    assert [e.rank for e in page.entries] == [3, 4]


def test_top_accepts_flat_and_resp3_pair_replies() -> None:
    core = LeaderboardCore("b", "competition")
    flat, _ = run_canned(core.top(3), [[b"a", b"2", b"b", b"2", b"c", b"1"]])
    pairs, _ = run_canned(core.top(3), [[[b"a", 2.0], [b"b", 2.0], [b"c", 1.0]]])
    assert flat == pairs == [Entry(1, "a", 2.0), Entry(1, "b", 2.0), Entry(3, "c", 1.0)]


def test_ordinal_rank_is_one_command_and_one_based() -> None:
    core = LeaderboardCore("b", "ordinal")
    rank, effects = run_canned(core.rank("m"), [0])
    assert rank == 1
    assert effects == [Command(("ZREVRANK", b"{leaderboard:b}", b"m"))]
    missing, _ = run_canned(core.rank("m"), [None])
    assert missing is None


def test_add_many_validates_everything_before_the_first_chunk() -> None:
    core = LeaderboardCore("b", "ordinal")
    mapping = {f"m{i}": i for i in range(1500)} | {"bad": float("nan")}
    with pytest.raises(ConfigurationError, match="NaN"):
        run_canned(core.add_many(mapping, None), [])


@pytest.mark.parametrize("value", [2**53, -(2**53), 0, 1.5, -1e300, 2.0**60])
def test_scores_accepted(value: float) -> None:
    assert check_score(value) == value


@pytest.mark.parametrize("value", [2**53 + 1, float("nan"), float("inf"), True, "1", None])
def test_scores_refused(value: object) -> None:
    with pytest.raises(ConfigurationError):
        check_score(value)


def test_a_timed_write_refused_by_the_server_becomes_period_expired_error() -> None:
    # An injected clock, not today's date: a leap day, whose month keep=1 retains until April.
    leap_day = datetime(2024, 2, 29, 18, tzinfo=timezone.utc)
    core = TimedLeaderboardCore("b", "month", 1, "ordinal", clock=lambda: leap_day)
    retention_end = datetime(2024, 4, 1, tzinfo=timezone.utc)
    server_ms = int(retention_end.timestamp() * 1000) + 5
    with pytest.raises(PeriodExpiredError) as caught:
        run_canned(core.incr("m", 1, None), [[server_ms]])  # the script's "wrote nothing"
    assert caught.value.period == "2024-02"
    assert caught.value.retention_end == retention_end
    assert caught.value.server_time == datetime.fromtimestamp(server_ms / 1000, timezone.utc)
    assert "month 2024-02 of 'b'" in str(caught.value)
    score, effects = run_canned(core.incr("m", 1, None), [b"3"])
    assert score == 3.0
    assert isinstance(effects[0], Eval)
    assert effects[0].keys == (b"{leaderboard:b}:month:2024-02",)
    assert effects[0].args[0] == int(retention_end.timestamp() * 1000)
