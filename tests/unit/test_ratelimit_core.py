"""The rate limiters' pure core, driven with canned replies: no server, no event loop."""

from __future__ import annotations

import math
import struct

import pytest

from redis_patterns import ConfigurationError, Decision, RateLimitedError
from redis_patterns._core import ratelimit as core
from redis_patterns._plan import Command, Eval, run_canned
from redis_patterns._script import package_script


def test_multi_hit_is_one_eval_with_every_limit() -> None:
    cores = [core.FixedWindowCore(10, 1.0), core.TokenBucketCore(5, 2.0, name="burst")]
    reply = [b"1700000000000000", 1, 1, 9, 0, 500000, 1, 4, 0, 1500000]
    (decisions, now), effects = run_canned(core.MultiCore(cores).decide("user:1", 1), [reply])
    assert now == 1_700_000_000_000_000
    (effect,) = effects
    assert isinstance(effect, Eval)
    assert effect.script.name == "ratelimit_hit"
    assert effect.keys == (b"{ratelimit:user:1}:fw:10:1000000", b"{ratelimit:user:1}:burst")
    # a token bucket is GCRA: its interval is 1 / refill_rate (µs per token)
    assert effect.args == ("hit", 1, "fw", "10", "1000000", "tb", "5", "500000.0")
    assert decisions == [Decision(True, 10, 9, 0.0, 0.5), Decision(True, 5, 4, 0.0, 1.5)]


LEAN = [
    (core.FixedWindowCore(10, 1.0), "ratelimit_fixed_window", (b"10", b"1000"), "fw:10:1000000"),
    (core.SlidingLogCore(5, 0.5), "ratelimit_sliding_log", (b"5", b"500000"), "sl:5:500000"),
    (
        core.SlidingWindowCore(7, 2.0),
        "ratelimit_sliding_window",
        (b"7", b"2000000"),
        "sw:7:2000000",
    ),
    (core.TokenBucketCore(5, 2.0), "ratelimit_gcra", (b"5", b"500000.0"), "tb:5:2e-06"),
    (
        core.GCRACore(10, 60.0, burst=3),
        "ratelimit_gcra",
        (b"3", b"6000000.0"),
        "gcra:3:6000000.0",
    ),
]


def packed(*numbers: float) -> bytes:
    """A lean script's packed reply (big-endian doubles)."""
    return struct.pack(f">{len(numbers)}d", *numbers)


@pytest.mark.parametrize(("limit", "script", "args", "suffix"), LEAN)
def test_one_limit_is_one_eval_of_its_own_script(
    limit: core.LimiterCore, script: str, args: tuple[bytes, bytes], suffix: str
) -> None:
    key = f"{{ratelimit:k}}:{suffix}".encode()
    assert limit.key(b"k") == key
    plans = core.SingleCore(limit, packed=True)
    lean = package_script(script)
    decision, effects = run_canned(plans.hit("k", 2), [packed(1, 3, 0, 250_000)])
    assert effects == [Eval(lean, (key,), (2, *args, b"1"))]
    assert decision == Decision(True, limit.capacity, 3, 0.0, 0.25)
    # the usual cost of 1, and a peek (cost 0: writes nothing)
    _, effects = run_canned(plans.hit("k", 1), [packed(1, 3, 0, 1)])
    assert effects == [Eval(lean, (key,), (b"1", *args, b"1"))]
    decision, effects = run_canned(plans.peek("k"), [packed(0, 0, 2_000_001, 6_000_000)])
    assert effects == [Eval(lean, (key,), (b"0", *args, b"1"))]
    assert decision == Decision(False, limit.capacity, 0, 2.000001, 6.0)
    _, effects = run_canned(plans.reset("k"), [1])
    assert effects == [Command(("DEL", key))]
    # a client that decodes replies gets an array of integers instead
    arrays = core.SingleCore(limit, packed=False)
    decision, effects = run_canned(arrays.hit("k", 1), [[0, 0, 2_000_001, 6_000_000]])
    assert effects == [Eval(lean, (key,), (b"1", *args, b"0"))]
    assert decision == Decision(False, limit.capacity, 0, 2.000001, 6.0)


def test_one_limit_is_its_own_plans_several_share_one_script() -> None:
    single = core.GCRACore(10, 60.0)
    assert isinstance(core.plans_for([single], packed=True), core.SingleCore)
    both = core.plans_for([single, core.FixedWindowCore(1, 1.0)], packed=True)
    assert isinstance(both, core.MultiCore)


@pytest.mark.parametrize(
    "reply", [packed(1, 1, 0, 999_999, 1_700_000), [1, 1, 0, 999_999, 1_700_000]]
)
def test_timed_hit_returns_the_server_time(reply: object) -> None:
    plans = core.SingleCore(core.SlidingLogCore(2, 1.0), packed=True)
    (decision, now), _ = run_canned(plans.timed_hit("k", 1), [reply])
    assert (decision, now) == (Decision(True, 2, 1, 0.0, 0.999999), 1_700_000)


def test_multi_peek_sends_peek_mode_with_cost_one() -> None:
    cores = [core.GCRACore(10, 60.0, burst=3), core.FixedWindowCore(5, 1.0)]
    reply = [b"1", 0, 0, 0, 2_000_001, 6_000_000, 1, 5, 0, 0]
    decision, effects = run_canned(core.MultiCore(cores).peek("k"), [reply])
    assert isinstance(effects[0], Eval)
    assert effects[0].args[:2] == ("peek", 1)
    assert effects[0].args[2:5] == ("gcra", "3", "6000000.0")
    assert decision == Decision(False, 3, 0, 2.000001, 6.0)


@pytest.mark.parametrize(
    "plans",
    [
        core.SingleCore(core.SlidingLogCore(2, 1.0), packed=False),
        core.MultiCore([core.SlidingLogCore(2, 1.0)]),
    ],
)
def test_enforce_raises_with_retry_after(plans: core.SingleCore | core.MultiCore) -> None:
    reply: list[object] = [0, 0, 250_000, 900_000]
    if isinstance(plans, core.MultiCore):
        reply = [b"1", 0, *reply]
    with pytest.raises(RateLimitedError) as info:
        run_canned(plans.enforce("k", 1), [reply])
    assert info.value.retry_after == 0.25


def test_multi_reset_deletes_every_key() -> None:
    cores = [core.FixedWindowCore(1, 1.0), core.SlidingWindowCore(1, 1.0)]
    _, effects = run_canned(core.MultiCore(cores).reset("k"), [2])
    assert effects == [
        Command(("DEL", b"{ratelimit:k}:fw:1:1000000", b"{ratelimit:k}:sw:1:1000000"))
    ]


@pytest.mark.parametrize("cost", [0, -1, 1.5, True, "1", None, 6])
def test_bad_cost_fails_before_any_effect(cost: object) -> None:
    cores = [core.TokenBucketCore(10, 1.0), core.FixedWindowCore(5, 1.0)]
    with pytest.raises(ConfigurationError):
        run_canned(core.MultiCore(cores).hit("k", cost), [])
    with pytest.raises(ConfigurationError):
        run_canned(core.SingleCore(core.FixedWindowCore(5, 1.0), packed=True).hit("k", cost), [])


def test_combine_picks_the_binding_decision() -> None:
    loose = Decision(True, 100, 50, 0.0, 10.0)
    tight = Decision(True, 10, 2, 0.0, 1.0)
    short = Decision(False, 10, 0, 0.5, 1.0)
    long = Decision(False, 100, 0, 30.0, 60.0)
    assert core.combine([loose, tight]) == tight
    assert core.combine([loose, short, long]) == long
    assert core.combine([tight, short]) == short


def test_policies_name_quota_and_window() -> None:
    cores = [
        core.FixedWindowCore(100, 60.0),
        core.SlidingLogCore(5, 0.25, name="burst"),
        core.SlidingWindowCore(10, 3600.0),
        core.TokenBucketCore(10, 2.5),
        core.GCRACore(100, 60.0, burst=20),
    ]
    assert [c.policy for c in cores] == [
        core.QuotaPolicy(None, 100, 60.0),
        core.QuotaPolicy("burst", 5, 0.25),
        core.QuotaPolicy(None, 10, 3600.0),
        core.QuotaPolicy(None, 10, 4.0),  # capacity / refill_rate
        core.QuotaPolicy(None, 20, 12.0),  # burst * period / limit
    ]


def test_limiter_core_imports_no_io() -> None:
    from pathlib import Path

    source = Path(core.__file__).read_text(encoding="utf-8")
    assert "import redis" not in source
    assert "_runner" not in source


# --- bad input, fuzzed: anything that is not valid fails before the plan yields an effect ----

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@given(cost=ANYTHING)
def test_fuzzed_cost_is_valid_or_refused_before_io(cost: object) -> None:
    valid = isinstance(cost, int) and not isinstance(cost, bool) and 1 <= cost <= 7
    plan = core.SingleCore(core.SlidingLogCore(7, 1.0), packed=True).hit("k", cost)
    if valid:
        assert isinstance(next(plan), Eval)
    else:
        with pytest.raises(ConfigurationError):
            next(plan)


@given(key=st.one_of(ANYTHING, st.text(min_size=1000, max_size=1100)))
def test_fuzzed_key_is_valid_or_refused_before_io(key: object) -> None:
    raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    valid = (
        isinstance(raw, bytes)
        and 0 < len(raw) <= 1024
        and not any(c in raw for c in (b"{", b"}", b"\x00"))
    )
    plan = core.SingleCore(core.GCRACore(3, 1.0), packed=True).peek(key)
    if valid:
        assert isinstance(next(plan), Eval)
    else:
        with pytest.raises(ConfigurationError):
            next(plan)


@given(
    limit=st.one_of(ANYTHING, st.integers(10**15 - 2, 10**15 + 2)),
    window=st.one_of(ANYTHING, st.floats(0.0004, 0.0016), st.floats(1e9 - 0.002, 1e9 + 0.002)),
)
def test_fuzzed_configuration_is_valid_or_refused(limit: object, window: object) -> None:
    limit_ok = isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= 10**15
    window_ok = (
        isinstance(window, int | float)
        and not isinstance(window, bool)
        and math.isfinite(window)
        and 0 < window <= 10**9 + 1
        and 1 <= round(window * 1000) <= 10**12
    )
    if limit_ok and window_ok:
        core.FixedWindowCore(limit, window)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigurationError):
            core.FixedWindowCore(limit, window)  # type: ignore[arg-type]
