"""The one backoff policy of every retry loop: a wait doubling from ``base`` up to ``cap``."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    *,
    rng: random.Random | None = None,
    low: float = 0.0,
    doublings: int = 30,
) -> float:
    """The wait before retry ``attempt`` (0 for the first): ``base * 2**attempt``, at most ``cap``.

    With ``rng`` the wait is drawn uniformly from ``[low, that]`` ("full jitter" when ``low`` is
    0, AWS architecture blog): clients that failed together retry apart instead of colliding
    again. Without ``rng`` it is exactly that value (a reconnect loop, alone on its link). Either
    way it depends only on the arguments, so a seeded ``rng`` makes it reproducible. The
    exponent stops at ``doublings``, so the product stays finite however many attempts fail.
    """
    ceiling = min(cap, base * 2 ** min(attempt, doublings))
    return ceiling if rng is None else rng.uniform(low, ceiling)
