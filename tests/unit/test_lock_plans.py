"""Lock plans on canned replies: no server, no event loop, no clock."""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_patterns import BackendTimeoutError, ConfigurationError, LockNotOwnedError
from redis_patterns._core.backoff import backoff_delay
from redis_patterns._core.lock import FencedStoreCore, LockCore
from redis_patterns._plan import Command, Eval, Now, Sleep, run_canned


def _core(**kwargs: object) -> LockCore:
    options: dict[str, Any] = {
        "ttl": 1.0,
        "timeout": None,
        "auto_renew": False,
        "max_hold": None,
        "on_lost": None,
    }
    options.update(kwargs)
    return LockCore("x", **options)


def test_acquire_is_one_eval_with_both_keys() -> None:
    core = _core()
    (acquired, _), effects = run_canned(core.acquire(False, None), [10.0, 12345])
    assert acquired
    assert core.fence == 12345
    assert core.held
    evals = [e for e in effects if isinstance(e, Eval)]
    assert len(evals) == 1
    assert evals[0].keys == (b"{lock:x}", b"{lock:x}:fence")
    assert core.valid_until == pytest.approx(11.0)  # measured from before the send


def test_waiting_never_sleeps_past_the_holder_expiry_or_deadline() -> None:
    core = _core()
    # held by someone for 3 more ms (the script answers -1 - PTTL); our deadline 50 ms away
    plan = core.acquire(True, 0.05)
    _, effects = run_canned(plan, [0.0, -4, 0.001, None, 0.004, -501, 0.01, None, 0.06, -501, 0.07])
    sleeps = [e.seconds for e in effects if isinstance(e, Sleep)]
    assert sleeps[0] <= 0.004  # holder_left 3 ms + 1 ms
    assert all(s <= 0.05 for s in sleeps)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.01, 0.1, rng=rng, low=0.005) for n in range(12)]
    assert all(0.005 <= d <= 0.1 for d in delays)
    assert len(set(delays)) == len(delays)  # jittered: waiters do not move in lockstep
    assert max(delays[6:]) > max(delays[:2])  # grows


def test_release_not_ours_clears_state_and_raises() -> None:
    core = _core()
    run_canned(core.acquire(False, None), [0.0, 7])
    with pytest.raises(LockNotOwnedError):
        run_canned(core.release(), [0])  # DELIFEQ said 0
    assert not core.held


def test_renew_marks_lost_once_and_stops() -> None:
    core = _core(auto_renew=True)
    run_canned(core.acquire(False, None), [0.0, 7, 0.0])
    delay, effects = run_canned(core.renew(), [0.3, 1, 0.3])  # Lua extend answered 1
    assert delay == pytest.approx(1 / 3)
    # A slow round trip shortens the wait: the next renewal is due ttl/3 after this one was sent.
    delay, _ = run_canned(core.renew(), [0.6, 1, 0.8])
    assert delay == pytest.approx(1 / 3 - 0.2)
    assert isinstance(effects[1], Eval)
    delay, _ = run_canned(core.renew(), [0.6, 0])
    assert delay is None
    assert core.lost
    assert run_canned(core.renew(), [])[0] is None  # no I/O once lost


def test_renew_backend_timeout_retries_then_gives_up_after_validity() -> None:
    core = _core(auto_renew=True)
    run_canned(core.acquire(False, None), [0.0, 7, 0.0])
    delay, _ = run_canned(core.renew(), [0.3, BackendTimeoutError("slow")])
    assert delay is not None
    assert delay < 1 / 3
    assert not core.lost
    delay, _ = run_canned(core.renew(), [1.5, BackendTimeoutError("slow")])
    assert delay is None
    assert core.lost


def test_release_racing_with_renewal_is_not_a_loss() -> None:
    core = _core(auto_renew=True)
    run_canned(core.acquire(False, None), [0.0, 7, 0.0])
    renewal = core.renew()
    assert isinstance(next(renewal), Now)
    assert isinstance(renewal.send(0.3), Eval)  # the extend is in flight...
    run_canned(core.release(), [1])  # ...when the release deletes the key
    with pytest.raises(StopIteration) as stop:
        renewal.send(0)  # the extend found nothing
    assert stop.value.value is None
    assert not core.lost


def test_unprobed_server_stays_on_scripts_for_extend() -> None:
    core = _core()  # a fresh feature record: DELIFEQ / SET IFEQ not known to exist
    run_canned(core.acquire(False, None), [0.0, 7])
    _, effects = run_canned(core.extend(1000), [0.0, 1, 0.1])
    assert not any(isinstance(e, Command) for e in effects)


def test_lock_core_modules_import_no_redis() -> None:
    # Only _runner talks to redis-py; the plans and the scheduler must not (checked statically:
    # importing the package itself loads the runner).
    import redis_patterns._background as background
    import redis_patterns._core.lock as lock
    import redis_patterns._core.redlock as redlock

    for module in (lock, redlock, background):
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {m for m in imported if m == "redis" or m.startswith("redis.")}, module


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.timedeltas(),
)


@settings(max_examples=100, deadline=None)
@given(name=st.one_of(_anything, st.text(max_size=2000)), ttl=_anything, timeout=_anything)
def test_fuzzed_lock_arguments_are_refused_cleanly(
    name: object, ttl: object, timeout: object
) -> None:
    # Constructors do no I/O; bad input must be a ConfigurationError (a ValueError), never
    # anything else, and accepted input must be sane.
    try:
        core = LockCore(name, ttl, timeout, False, None, None)  # type: ignore[arg-type]
    except ConfigurationError:
        return
    assert core.ttl_ms >= 3
    assert isinstance(name, str | bytes)
    assert not isinstance(name, bool)
    assert core.timeout_ms is None or core.timeout_ms >= 0


@settings(max_examples=100, deadline=None)
@given(fence=_anything)
def test_fuzzed_fences_are_refused_before_io(fence: object) -> None:
    plan = FencedStoreCore("r").write(fence, "f", "v")
    try:
        effect = next(plan)
    except ConfigurationError:
        return
    assert isinstance(fence, int)
    assert not isinstance(fence, bool)
    assert 0 <= fence < 2**53
    assert isinstance(effect, Eval)
