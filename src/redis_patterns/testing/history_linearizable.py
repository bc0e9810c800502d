"""The linearizability checker: Wing & Gong's search with Lowe's memoization, over a `Model`."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from .history_record import Event

__all__ = [
    "UNKNOWN",
    "LinOp",
    "LinearizabilityResult",
    "Model",
    "check_linearizable",
    "kv_model",
    "register_model",
]

# --- (d) linearizability: Wing & Gong's search with Lowe's memoization (as in Porcupine) ------

UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
"""The output of an operation whose outcome is unknown (``info``): a model must accept it."""


@dataclass(frozen=True, slots=True)
class LinOp:
    """One operation for `check_linearizable`: its input and output, called and returned when.

    An ``info`` operation (outcome unknown) has ``returned = inf`` and ``output = UNKNOWN``: it
    may take effect at any point after its call, or never (a model step treats it as optional
    by accepting any state change it allows).
    """

    input: Any
    output: Any
    called: float
    returned: float = math.inf
    proc: str = ""

    @classmethod
    def from_event(cls, event: Event, input: Any, output: Any = None) -> LinOp:
        """``ok`` events keep their times; ``info`` ones get ``returned = inf``, unknown output."""
        if event.status == "fail":
            raise ValueError("a failed operation did not happen: leave it out of the history")
        if event.status == "info":
            return cls(input, UNKNOWN, event.invoke_t, math.inf, event.proc)
        return cls(input, output, event.invoke_t, event.complete_t, event.proc)


@dataclass(frozen=True, slots=True)
class Model:
    """A sequential specification: ``step(state, input, output) -> (legal, next_state)``.

    ``partition`` splits a history into independent ones (e.g. per key), each checked alone,
    which keeps the search small. States must be hashable (they are memoized).
    """

    init: Callable[[], Hashable]
    step: Callable[[Any, Any, Any], tuple[bool, Any]]
    partition: Callable[[list[LinOp]], list[list[LinOp]]] | None = None


def _register_step(state: Any, op: Any, output: Any) -> tuple[bool, Any]:
    kind = op[0]
    if kind == "write":
        return True, op[1]
    if kind == "read":
        return (output is UNKNOWN or output == state), state
    if kind == "cas":
        if output is UNKNOWN:
            return True, (op[2] if state == op[1] else state)
        return (output == (state == op[1])), (op[2] if output else state)
    raise ValueError(f"unknown register operation {op!r}")


def register_model(initial: Hashable = None) -> Model:
    """A single register. Inputs: ``("write", v)``, ``("read",)`` (output: the value read),
    ``("cas", old, new)`` (output: whether it swapped)."""
    return Model(lambda: initial, _register_step)


def kv_model(initial: Hashable = None) -> Model:
    """Independent registers per key, partitioned per key. Inputs: ``(key, register_input)``."""

    def step(state: Any, op: Any, output: Any) -> tuple[bool, Any]:
        return _register_step(state, op[1], output)

    def partition(ops: list[LinOp]) -> list[list[LinOp]]:
        by_key: dict[Any, list[LinOp]] = collections.defaultdict(list)
        for op in ops:
            by_key[op.input[0]].append(op)
        return list(by_key.values())

    return Model(lambda: initial, step, partition)


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """``ok`` is True (linearizable), False (not), or None (the search ran out of ``budget``).

    ``failed`` is the first partition found not linearizable.
    """

    ok: bool | None
    partitions: int
    failed: tuple[LinOp, ...] = ()

    def __bool__(self) -> bool:
        return self.ok is True


class _Entry:
    __slots__ = ("id", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: LinOp | None, id: int, is_call: bool) -> None:
        self.op = op
        self.id = id
        self.is_call = is_call
        # Any: a doubly linked list whose links are set right after construction.
        self.match: Any = None
        self.prev: Any = None
        self.next: Any = None


def _lift(entry: _Entry) -> None:
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev
    match = entry.match
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    match = entry.match
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


def _check_partition(ops: list[LinOp], model: Model, budget: int) -> bool | None:
    events: list[tuple[float, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call, ret = _Entry(op, i, True), _Entry(None, i, False)
        call.match, ret.match = ret, call
        events.append((op.called, 0, i, call))  # at equal times a call sorts first: concurrent
        events.append((op.returned, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, -1, False)
    previous = head
    for _, _, _, linked in events:
        previous.next, linked.prev = linked, previous
        previous = linked

    state = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return None
        if entry.is_call:
            assert entry.op is not None
            legal, new_state = model.step(state, entry.op.input, entry.op.output)
            if legal:
                key = (linearized | (1 << entry.id), new_state)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized |= 1 << entry.id
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return reached with its call not linearized: undo the last choice.
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.id)
            _unlift(entry)
            entry = entry.next
    return True


def check_linearizable(
    ops: Iterable[LinOp], model: Model, *, budget: int = 1_000_000
) -> LinearizabilityResult:
    """Is there an order of ``ops``, consistent with real time, that ``model`` accepts?

    Wing & Gong's backtracking search with Lowe's cache of (linearized set, state), the
    algorithm of Porcupine and Knossos. ``budget`` bounds the steps per partition; when it
    runs out the answer is ``ok=None`` (unknown), never a guess.
    """
    everything = list(ops)
    partitions = model.partition(everything) if model.partition else [everything]
    unknown = False
    for part in partitions:
        verdict = _check_partition(part, model, budget)
        if verdict is False:
            return LinearizabilityResult(False, len(partitions), tuple(part))
        unknown = unknown or verdict is None
    return LinearizabilityResult(None if unknown else True, len(partitions))
