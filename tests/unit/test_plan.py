"""Plans run without a server: canned replies in, effects out."""

from __future__ import annotations

import pytest

from redis_patterns import BackendUnavailableError, ConfigurationError
from redis_patterns._core.bounded_counter import BoundedCounterCore
from redis_patterns._plan import Command, Eval, Now, Plan, Sleep, run_canned


def test_incr_plan_yields_one_eval_and_decodes_reply() -> None:
    core = BoundedCounterCore("k", 10)
    value, effects = run_canned(core.incr(3), [3])
    assert value == 3
    assert len(effects) == 1
    effect = effects[0]
    assert isinstance(effect, Eval)
    assert effect.keys == (b"k",)
    assert effect.args == (10, 3)
    assert effect.script.name == "bounded_counter_incr"


def test_incr_plan_maps_nil_to_none() -> None:
    value, _ = run_canned(BoundedCounterCore("k", 10).incr(11), [None])
    assert value is None


def test_bad_amount_raises_before_any_effect() -> None:
    with pytest.raises(ConfigurationError, match="amount"):
        run_canned(BoundedCounterCore("k", 10).incr(0), [])


def test_errors_are_thrown_into_the_plan() -> None:
    def plan() -> Plan[str]:
        try:
            yield Command(("GET", "k"))
        except BackendUnavailableError:
            started = yield Now()
            yield Sleep(0.5)
            return f"recovered at {started}"
        return "no error"

    value, effects = run_canned(plan(), [BackendUnavailableError("down"), 12.0, None])
    assert value == "recovered at 12.0"
    assert [type(e).__name__ for e in effects] == ["Command", "Now", "Sleep"]


def test_run_canned_reports_missing_replies() -> None:
    with pytest.raises(AssertionError, match="no canned reply"):
        run_canned(BoundedCounterCore("k", 10).incr(1), [])


def test_value_plan_treats_missing_key_as_zero() -> None:
    assert run_canned(BoundedCounterCore("k", 10).value(), [None])[0] == 0
    assert run_canned(BoundedCounterCore("k", 10).value(), [b"7"])[0] == 7
