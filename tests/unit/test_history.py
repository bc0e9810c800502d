"""The history recorder and its checkers: each catches its violation and passes a valid history."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from redis_patterns.testing.history import (
    UNKNOWN,
    Event,
    FencedResource,
    FencedWrite,
    History,
    Hold,
    LinOp,
    Status,
    check_at_least_once,
    check_fenced,
    check_linearizable,
    check_no_overlap,
    holds_from_history,
    kv_model,
    monotonic,
    register_model,
)

# --- recorder ---------------------------------------------------------------------------------


def test_operations_record_ok_fail_and_info() -> None:
    history = History()
    with history.operation("acquire", "p1") as op:
        op.ok({"valid_until": 5.0})
    with pytest.raises(LookupError), history.operation("acquire", "p2", fails=(LookupError,)):
        raise LookupError("refused")
    with pytest.raises(TimeoutError), history.operation("acquire", "p3"):
        raise TimeoutError("no reply")
    with history.operation("release", "p1"):
        pass
    events = history.events
    assert [(e.op, e.proc, e.status) for e in events] == [
        ("acquire", "p1", "ok"),
        ("acquire", "p2", "fail"),
        ("acquire", "p3", "info"),
        ("release", "p1", "ok"),
    ]
    assert events[0].value == {"valid_until": 5.0}
    assert all(e.invoke_t <= e.complete_t for e in events)
    assert [e.invoke_t for e in events] == sorted(e.invoke_t for e in events)


def test_an_operation_completes_once() -> None:
    op = History().invoke("x", "p")
    op.ok()
    with pytest.raises(RuntimeError):
        op.fail()


def test_threads_record_without_losing_events() -> None:
    history = History()

    def work(n: int) -> None:
        for i in range(200):
            history.invoke("w", f"t{n}", i).ok(i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history) == 1600
    assert sorted(e.value for e in history if e.proc == "t3") == list(range(200))


_WORKER = """
import sys
from redis_patterns.testing.history import History
history = History(sys.argv[1])
for i in range(100):
    history.invoke("w", sys.argv[2], i).ok(i)
"""


def test_processes_append_to_one_file_and_times_compare(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    before = monotonic()
    children = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), f"proc{n}"]) for n in range(3)
    ]
    for child in children:
        assert child.wait(60) == 0
    after = monotonic()
    history = History.load(path)
    assert len(history) == 300
    assert {e.proc for e in history} == {"proc0", "proc1", "proc2"}
    # CLOCK_MONOTONIC is system-wide: the children's times fall inside the parent's window.
    assert all(before <= e.invoke_t <= e.complete_t <= after for e in history)


# --- (a) interval overlap ---------------------------------------------------------------------


def test_no_overlap_passes_sequential_holds() -> None:
    holds = [Hold("a", 0.0, 1.0), Hold("b", 1.0, 2.0), Hold("a", 2.5, 3.0)]
    result = check_no_overlap(holds)
    assert result.ok
    assert result.holds == 3


def test_overlap_is_caught() -> None:
    a, b = Hold("a", 0.0, 2.0), Hold("b", 1.5, 3.0)
    result = check_no_overlap([b, a, Hold("c", 5.0, 6.0)])
    assert not result
    assert result.overlaps == ((a, b),)


def test_expired_lease_ends_the_hold_so_a_late_release_is_no_overlap() -> None:
    # a was paused past its lease: it released at 5.0 but its lease ended at 1.0.
    a = Hold("a", 0.0, released=5.0, valid_until=1.0)
    b = Hold("b", 1.2, 2.0)
    assert check_no_overlap([a, b]).ok
    # Without the lease bound the same timeline is an overlap.
    assert not check_no_overlap([Hold("a", 0.0, released=5.0), b]).ok


def test_holds_from_history() -> None:
    def ev(
        op: str, proc: str, t0: float, t1: float, status: Status = "ok", value: object = None
    ) -> Event:
        return Event(op, proc, t0, t1, status, value)

    events = [
        ev("acquire", "p1", 0.0, 0.1, value={"valid_until": 10.0}),
        ev("acquire", "p2", 0.05, 0.2, status="info"),  # unknown outcome: no hold
        ev("release", "p1", 1.0, 1.1),
        ev("acquire", "p2", 1.05, 1.2, value=1.9),  # a bare number is valid_until
        ev("acquire", "p3", 1.5, 1.6),  # never released: held to the end of the history
    ]
    holds = holds_from_history(events)
    assert sorted(holds, key=lambda h: h.acquired) == [
        Hold("p1", 0.1, 1.0, 10.0),
        Hold("p2", 1.2, math.inf, 1.9),
        Hold("p3", 1.6, math.inf, math.inf),
    ]
    result = check_no_overlap(holds)
    assert [(x.owner, y.owner) for x, y in result.overlaps] == [("p2", "p3")]


# --- (b) fenced resource ----------------------------------------------------------------------


def test_fenced_resource_applies_the_rule() -> None:
    resource = FencedResource()
    assert resource.write(1, "a", "x")
    assert resource.write(1, "a", "y")  # same token, same owner: the holder writes again
    assert not resource.write(1, "b", "z")  # same token, another owner
    assert resource.write(3, "b", "z")
    assert not resource.write(2, "a", "late")  # a stale holder woke up
    assert resource.value == "z"
    assert check_fenced(resource.writes).ok


def test_check_fenced_catches_a_stale_write_accepted() -> None:
    writes = [
        FencedWrite(5, "b", True),
        FencedWrite(4, "a", True),  # accepted although 4 < 5: the violation
        FencedWrite(5, "c", True),  # equal token, different owner: also stale
        FencedWrite(6, "a", False),  # a valid write refused: the resource is too strict
    ]
    result = check_fenced(writes)
    assert not result
    assert result.stale_accepted == (writes[1], writes[2])
    assert result.wrongly_rejected == (writes[3],)


# --- (c) at-least-once ------------------------------------------------------------------------


def test_at_least_once_passes_with_duplicates_counted() -> None:
    result = check_at_least_once([1, 2, 3], [1, 2, 2, 3, 3, 3])
    assert result.ok
    assert not result.exactly_once
    assert result.duplicates == {2: 2, 3: 3}
    assert result.delivered == 6


def test_exactly_once() -> None:
    assert check_at_least_once(["a", "b"], ["b", "a"]).exactly_once


def test_lost_and_unexpected_ids_are_caught() -> None:
    result = check_at_least_once([1, 2, 3], [1, 4], maybe_sent=[5])
    assert not result
    assert result.lost == frozenset({2, 3})
    assert result.unexpected == frozenset({4})


def test_maybe_sent_ids_are_neither_lost_nor_unexpected() -> None:
    result = check_at_least_once([1], [1, 7], maybe_sent=[7, 8])
    assert result.ok
    assert result.lost == frozenset()


# --- (d) linearizability ----------------------------------------------------------------------

READ = ("read",)


def _w(value: object, called: float, returned: float) -> LinOp:
    return LinOp(("write", value), None, called, returned)


def _r(value: object, called: float, returned: float) -> LinOp:
    return LinOp(READ, value, called, returned)


def test_porcupine_readme_register_examples() -> None:
    # Porcupine README, example 1 (register initialised to 0), as call/return times:
    # C0 |-- put(100) --|, C1 inside it reads 100, C2 inside that reads 0: linearizable.
    ok = [_w(100, 0, 5), _r(100, 1, 4), _r(0, 2, 3)]
    assert check_linearizable(ok, register_model(0)).ok is True
    # Example 2: a read of 200 completes, then a later read sees 0 again: not linearizable.
    bad = [_w(200, 0, 5), _r(200, 1, 2), _r(0, 3, 4)]
    result = check_linearizable(bad, register_model(0))
    assert result.ok is False
    assert not result


def test_stale_read_after_a_completed_write_is_caught() -> None:
    assert check_linearizable([_w(1, 0, 1), _r(None, 2, 3)], register_model()).ok is False
    assert check_linearizable([_w(1, 0, 1), _r(1, 2, 3)], register_model()).ok is True


def test_concurrent_reads_may_see_either_value() -> None:
    for seen in (None, 1):
        assert check_linearizable([_w(1, 0, 3), _r(seen, 1, 2)], register_model()).ok is True


def test_compare_and_set() -> None:
    def cas(old: object, new: object, swapped: bool, t0: float, t1: float) -> LinOp:
        return LinOp(("cas", old, new), swapped, t0, t1)

    # Two sequential CAS from the same old value cannot both succeed.
    both = [cas(None, 1, True, 0, 1), cas(None, 2, True, 2, 3)]
    assert check_linearizable(both, register_model()).ok is False
    # Concurrent ones: exactly one may win.
    one = [cas(None, 1, True, 0, 3), cas(None, 2, False, 1, 2), _r(1, 4, 5)]
    assert check_linearizable(one, register_model()).ok is True


def test_unknown_outcomes_may_or_may_not_take_effect() -> None:
    lost = Event("write", "p1", 0.0, 1.0, "info")
    maybe = LinOp.from_event(lost, ("write", 2))
    assert maybe.output is UNKNOWN
    assert maybe.returned == math.inf
    assert check_linearizable([maybe, _r(2, 5, 6)], register_model()).ok is True
    assert check_linearizable([maybe, _r(None, 5, 6)], register_model()).ok is True
    # But once a read saw it take effect, a later read cannot see it undone.
    seen_then_gone = [maybe, _r(2, 5, 6), _r(None, 7, 8)]
    assert check_linearizable(seen_then_gone, register_model()).ok is False
    with pytest.raises(ValueError, match="did not happen"):
        LinOp.from_event(Event("write", "p1", 0.0, 1.0, "fail"), ("write", 3))


def test_kv_model_checks_each_key_alone() -> None:
    def kv(key: str, op: LinOp) -> LinOp:
        return LinOp((key, op.input), op.output, op.called, op.returned)

    ops = [
        kv("a", _w(1, 0, 1)),
        kv("b", _w(5, 0, 1)),
        kv("a", _r(1, 2, 3)),
        kv("b", _r(None, 2, 3)),  # key b lost its write
    ]
    result = check_linearizable(ops, kv_model())
    assert result.ok is False
    assert result.partitions == 2
    assert {op.input[0] for op in result.failed} == {"b"}
    assert check_linearizable(ops[:3], kv_model()).ok is True


def test_a_search_over_budget_is_unknown_not_a_guess() -> None:
    ops = [_w(i, 0, 10) for i in range(6)] + [_r(3, 11, 12)]
    assert check_linearizable(ops, register_model(), budget=3).ok is None
    assert check_linearizable(ops, register_model()).ok is True


def test_a_larger_concurrent_history() -> None:
    # 4 writers overlapping in waves, each followed by a read of the last wave's winner.
    ops: list[LinOp] = []
    for wave in range(30):
        t = wave * 10.0
        ops += [_w((wave, i), t, t + 5) for i in range(4)]
        ops.append(_r((wave, 2), t + 6, t + 7))
    assert check_linearizable(ops, register_model()).ok is True
    ops.append(_r((0, 2), 400.0, 401.0))  # a stale value at the end
    assert check_linearizable(ops, register_model()).ok is False
