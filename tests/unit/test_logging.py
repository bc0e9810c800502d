"""Coalesced warnings on an injected clock: the first at once, then one line per interval."""

from __future__ import annotations

import logging

import pytest

from redis_patterns._logging import WarningCoalescer

log = logging.getLogger("redis_patterns.test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_a_30_s_outage_of_2000_requests_logs_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    coalescer = WarningCoalescer(60.0, clock=clock)
    caplog.set_level(logging.WARNING, log.name)
    for i in range(2000):  # 2,000 requests spread over 30 s
        clock.now = 1000.0 + i * 0.015
        coalescer.log(log, "down", logging.WARNING, "limiter unavailable: %s", "refused")
    assert lines(caplog) == ["limiter unavailable: refused"]
    clock.now = 1060.0  # the interval ends; no more failures: the timer writes the count
    assert coalescer.flush_due() == 1
    assert lines(caplog)[1:] == [
        "limiter unavailable: refused (repeated 1,999 times in the last 60 s)"
    ]
    assert [getattr(r, "repeated", None) for r in caplog.records] == [0, 1999]
    assert caplog.records[0].filename == "test_logging.py"  # the caller's line, not ours
    assert coalescer.flush_due() == 0  # nothing more to say


def test_one_line_per_interval_while_it_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    coalescer = WarningCoalescer(10.0, clock=clock)
    caplog.set_level(logging.WARNING, log.name)
    written = 0
    for i in range(3000):  # 30 s at 100 per second
        clock.now = 1000.0 + i * 0.01
        written += coalescer.log(log, "down", logging.WARNING, "down (%d)", i)
    assert written == 3
    assert lines(caplog) == [
        "down (0)",
        "down (1000) (repeated 1,000 times in the last 10 s)",
        "down (2000) (repeated 1,000 times in the last 10 s)",
    ]


def test_kinds_and_loggers_are_counted_apart(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    coalescer = WarningCoalescer(60.0, clock=clock)
    other = logging.getLogger("redis_patterns.test.other")
    caplog.set_level(logging.INFO)
    for _ in range(100):
        coalescer.log(log, "a", logging.WARNING, "a")
        coalescer.log(log, "b", logging.WARNING, "b")
        coalescer.log(other, "a", logging.WARNING, "other a")
    assert sorted(r.getMessage() for r in caplog.records) == ["a", "b", "other a"]
    clock.now += 60
    assert coalescer.flush_due() == 3
    assert sum("repeated 99 times" in r.getMessage() for r in caplog.records) == 3


def test_a_single_occurrence_after_the_interval_has_no_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    coalescer = WarningCoalescer(60.0, clock=clock)
    caplog.set_level(logging.WARNING, log.name)
    coalescer.log(log, "k", logging.WARNING, "once")
    clock.now += 3600
    coalescer.log(log, "k", logging.WARNING, "again")
    assert lines(caplog) == ["once", "again"]
    coalescer.log(log, "k", logging.WARNING, "and again")
    clock.now += 7200
    coalescer.flush_due()
    assert lines(caplog)[-1] == "and again (repeated 1 times in the last 2.0 h)"


def test_the_timer_is_armed_once_for_the_earliest_deadline() -> None:
    clock = Clock()
    armed: list[float] = []
    coalescer = WarningCoalescer(60.0, clock=clock, timer=lambda delay, fn: armed.append(delay))
    coalescer.log(log, "a", logging.WARNING, "a")
    clock.now += 5
    for _ in range(10):
        coalescer.log(log, "a", logging.WARNING, "a")  # suppressed: the timer is due at +60
    coalescer.log(log, "b", logging.WARNING, "b")
    coalescer.log(log, "b", logging.WARNING, "b")  # due later than the armed timer: no new one
    assert armed == [55.0]
    clock.now += 55
    coalescer.flush_due()  # "a" written; "b" still counting: re-armed for its deadline
    assert armed == [55.0, 5.0]


def test_reset_forgets_counts(caplog: pytest.LogCaptureFixture) -> None:
    coalescer = WarningCoalescer(60.0, clock=Clock())
    caplog.set_level(logging.WARNING, log.name)
    coalescer.log(log, "k", logging.WARNING, "x")
    coalescer.log(log, "k", logging.WARNING, "x")
    coalescer.reset()
    assert coalescer.flush_due(everything=True) == 0
    coalescer.log(log, "k", logging.WARNING, "x")
    assert lines(caplog) == ["x", "x"]
