"""The one backoff helper: exact without a random source, reproducible and bounded with one."""

from __future__ import annotations

import random

from redis_patterns._core.backoff import backoff_delay


def test_without_rng_the_wait_doubles_to_the_cap() -> None:
    assert [backoff_delay(n, 0.05, 2.0) for n in range(8)] == [
        0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0,
    ]  # fmt: skip
    assert backoff_delay(10**6, 0.05, 2.0) == 2.0  # the exponent is bounded: no overflow


def test_with_rng_the_wait_is_reproducible_and_within_bounds() -> None:
    first = [backoff_delay(n, 0.01, 0.1, rng=random.Random(7), low=0.005) for n in range(20)]
    again = [backoff_delay(n, 0.01, 0.1, rng=random.Random(7), low=0.005) for n in range(20)]
    assert first == again
    assert all(0.005 <= d <= min(0.1, 0.01 * 2**n) for n, d in enumerate(first))


def test_doublings_bound_the_growth_below_the_cap() -> None:
    assert backoff_delay(40, 25, 10**9, doublings=16) == 25 * 2**16
