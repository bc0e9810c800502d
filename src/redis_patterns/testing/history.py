"""Histories of operations and the checkers that judge them (RELIABILITY §2, Jepsen-style).

Workers record each operation as an `Event`: ``(op, proc, invoke_t, complete_t, status,
value)``, with ``status`` one of ``ok`` (it happened), ``fail`` (it certainly did not happen)
and ``info`` (unknown: a timeout, a lost reply). Times are ``CLOCK_MONOTONIC``, which is
system-wide on Linux, so events recorded by different processes compare.

Checkers:

- `check_no_overlap` (a): lock holds ``[acquired, min(released, valid_until)]`` never overlap;
- `check_fenced` / `FencedResource` (b): a resource accepts a write iff its token is greater
  than every token seen, or equal to the greatest with the same owner;
- `check_at_least_once` (c): every acknowledged id was delivered; duplicates are counted;
- `check_linearizable` (d): Wing & Gong's search with Lowe's memoization, partitioned per key
  as Porcupine does, over a `Model` (`register_model`, `kv_model`, or your own).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = [
    "DeliveryResult",
    "Event",
    "FenceResult",
    "FencedResource",
    "FencedWrite",
    "History",
    "Hold",
    "LinOp",
    "LinearizabilityResult",
    "Model",
    "OverlapResult",
    "Status",
    "UNKNOWN",
    "check_at_least_once",
    "check_fenced",
    "check_linearizable",
    "check_no_overlap",
    "holds_from_history",
    "kv_model",
    "monotonic",
    "register_model",
]

Status = Literal["ok", "fail", "info"]
_STATUSES = ("ok", "fail", "info")


def monotonic() -> float:
    """``CLOCK_MONOTONIC`` in seconds: comparable across the processes of one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True)
class Event:
    """One operation: invoked at ``invoke_t``, completed at ``complete_t`` with ``status``.

    ``value`` is what the operation carried or returned (JSON-serializable when the history
    is kept in a file).
    """

    op: str
    proc: str
    invoke_t: float
    complete_t: float
    status: Status
    value: Any = None


class Operation:
    """An invoked operation; `ok`, `fail` or `info` completes it (once)."""

    __slots__ = ("_done", "_history", "invoke_t", "op", "proc", "value")

    def __init__(self, history: History, op: str, proc: str, value: Any) -> None:
        self._history = history
        self.op = op
        self.proc = proc
        self.value = value
        self.invoke_t = monotonic()
        self._done: Event | None = None

    def ok(self, value: Any = None) -> Event:
        """It happened (``value``: its result)."""
        return self._complete("ok", value)

    def fail(self, value: Any = None) -> Event:
        """It certainly did not happen."""
        return self._complete("fail", value)

    def info(self, value: Any = None) -> Event:
        """Its outcome is unknown (a timeout, a lost reply)."""
        return self._complete("info", value)

    @property
    def done(self) -> bool:
        return self._done is not None

    def _complete(self, status: Status, value: Any) -> Event:
        if self._done is not None:
            raise RuntimeError(f"operation {self.op!r} of {self.proc!r} was already completed")
        event = Event(self.op, self.proc, self.invoke_t, monotonic(), status, value)
        self._done = event
        self._history.append(event)
        return event


class History:
    """A thread-safe, and with ``path`` process-safe, recorder of `Event`s.

    Without ``path`` events are kept in memory. With ``path`` each event is also appended to
    that file as one JSON line with a single ``write`` on an ``O_APPEND`` descriptor, so
    several processes can record into the same file; `History.load` reads it back.

    >>> history = History()
    >>> with history.operation("acquire", "w1") as op:
    ...     op.ok(lock.acquire())
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def invoke(self, op: str, proc: str, value: Any = None) -> Operation:
        """Start an operation now; complete it with ``.ok()``, ``.fail()`` or ``.info()``."""
        return Operation(self, op, proc, value)

    @contextlib.contextmanager
    def operation(
        self,
        op: str,
        proc: str,
        value: Any = None,
        *,
        fails: tuple[type[BaseException], ...] = (),
    ) -> Iterator[Operation]:
        """Record the block as one operation.

        Complete it inside the block with ``op.ok(result)`` (or ``fail``/``info``). If the block
        ends without doing so it is ``ok``; an exception in ``fails`` makes it ``fail`` (known
        not to have happened) and any other exception ``info`` (unknown); both re-raise.
        """
        operation = self.invoke(op, proc, value)
        try:
            yield operation
        except fails as exc:
            if not operation.done:
                operation.fail(repr(exc))
            raise
        except BaseException as exc:
            if not operation.done:
                operation.info(repr(exc))
            raise
        if not operation.done:
            operation.ok()

    def append(self, event: Event) -> None:
        """Add a finished event (from `Operation`, or recorded by hand)."""
        if event.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {event.status!r}")
        with self._lock:
            self._events.append(event)
            if self.path is not None:
                row = [event.op, event.proc, event.invoke_t, event.complete_t, event.status]
                line = orjson.dumps([*row, event.value])
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line + b"\n")
                finally:
                    os.close(fd)

    @classmethod
    def load(cls, path: str | Path) -> History:
        """The events that every process appended to ``path``."""
        history = cls()
        with open(path, "rb") as file:
            for line in file:
                if line.strip():
                    op, proc, invoke_t, complete_t, status, value = orjson.loads(line)
                    history._events.append(Event(op, proc, invoke_t, complete_t, status, value))
        return history

    @property
    def events(self) -> list[Event]:
        """Every event, ordered by invocation time."""
        with self._lock:
            return sorted(self._events, key=lambda e: (e.invoke_t, e.complete_t))

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


# --- (a) interval overlap -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hold:
    """A time ``owner`` believed it held a lock: from ``acquired`` until the earlier of
    ``released`` and ``valid_until`` (a lease stops protecting when it expires)."""

    owner: str
    acquired: float
    released: float = math.inf
    valid_until: float = math.inf

    @property
    def end(self) -> float:
        return min(self.released, self.valid_until)


@dataclass(frozen=True, slots=True)
class OverlapResult:
    """What `check_no_overlap` found; true when no two holds overlap."""

    holds: int
    overlaps: tuple[tuple[Hold, Hold], ...]

    @property
    def ok(self) -> bool:
        return not self.overlaps

    def __bool__(self) -> bool:
        return self.ok


def check_no_overlap(holds: Iterable[Hold]) -> OverlapResult:
    """Find every pair of holds whose intervals overlap (touching ends do not overlap)."""
    ordered = sorted((h for h in holds if h.end > h.acquired), key=lambda h: h.acquired)
    overlaps: list[tuple[Hold, Hold]] = []
    active: list[Hold] = []
    for hold in ordered:
        active = [a for a in active if a.end > hold.acquired]
        overlaps.extend((a, hold) for a in active)
        active.append(hold)
    return OverlapResult(len(ordered), tuple(overlaps))


def holds_from_history(
    history: History | Iterable[Event], *, acquire: str = "acquire", release: str = "release"
) -> list[Hold]:
    """The holds a history shows: per process, a successful ``acquire`` to its next ``release``.

    A hold starts when the acquire *completed* (only then does the client believe it holds)
    and ends when the release was *invoked* (it stops acting as holder then), or when the
    lease ran out: the acquire's value may be a number, or a mapping with ``valid_until``
    (a ``CLOCK_MONOTONIC`` time). Acquires that failed or whose outcome is unknown (``info``)
    start no hold: the client does not act on a lock it does not know it has.
    """
    if isinstance(history, History):
        events = history.events
    else:
        events = sorted(history, key=lambda e: e.invoke_t)
    open_holds: dict[str, Hold] = {}
    holds: list[Hold] = []
    for event in events:
        if event.op == acquire and event.status == "ok":
            if event.proc in open_holds:  # acquired again without a release: keep both
                holds.append(open_holds.pop(event.proc))
            open_holds[event.proc] = Hold(
                event.proc, event.complete_t, valid_until=_valid_until(event.value)
            )
        elif event.op == release and event.proc in open_holds:
            hold = open_holds.pop(event.proc)
            holds.append(Hold(hold.owner, hold.acquired, event.invoke_t, hold.valid_until))
    holds.extend(open_holds.values())
    return holds


def _valid_until(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("valid_until")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.inf


# --- (b) fenced resource --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FencedWrite:
    """A write carrying a fencing ``token`` from ``owner``, and whether it was ``accepted``."""

    token: int
    owner: str
    accepted: bool
    value: Any = None


class FencedResource:
    """An in-memory resource that applies the fencing rule itself (thread-safe).

    A write is accepted iff ``token > max_seen``, or ``token == max_seen`` from the owner that
    set ``max_seen`` (the same holder writing twice). Every decision is kept in `writes`.
    """

    def __init__(self) -> None:
        self.max_seen: int | None = None
        self.max_owner: str | None = None
        self.writes: list[FencedWrite] = []
        self.value: Any = None
        self._lock = threading.Lock()

    def write(self, token: int, owner: str, value: Any = None) -> bool:
        """Apply the write if the fencing rule allows it; return whether it did."""
        with self._lock:
            accepted = _accepts(self.max_seen, self.max_owner, token, owner)
            if accepted:
                self.max_seen, self.max_owner, self.value = token, owner, value
            self.writes.append(FencedWrite(token, owner, accepted, value))
            return accepted


def _accepts(max_seen: int | None, max_owner: str | None, token: int, owner: str) -> bool:
    return max_seen is None or token > max_seen or (token == max_seen and owner == max_owner)


@dataclass(frozen=True, slots=True)
class FenceResult:
    """What `check_fenced` found; true when every decision followed the fencing rule."""

    writes: int
    stale_accepted: tuple[FencedWrite, ...]
    wrongly_rejected: tuple[FencedWrite, ...]

    @property
    def ok(self) -> bool:
        return not self.stale_accepted and not self.wrongly_rejected

    def __bool__(self) -> bool:
        return self.ok


def check_fenced(writes: Iterable[FencedWrite]) -> FenceResult:
    """Replay a resource's decisions, in the order it made them, against the fencing rule.

    A stale write accepted is a safety violation (an old holder overwrote a newer one's
    work); a valid write rejected is a liveness bug of the resource.
    """
    max_seen: int | None = None
    max_owner: str | None = None
    stale: list[FencedWrite] = []
    rejected: list[FencedWrite] = []
    count = 0
    for write in writes:
        count += 1
        allowed = _accepts(max_seen, max_owner, write.token, write.owner)
        if write.accepted and not allowed:
            stale.append(write)
        elif allowed and not write.accepted:
            rejected.append(write)
        if write.accepted and (max_seen is None or write.token >= max_seen):
            max_seen, max_owner = write.token, write.owner
    return FenceResult(count, tuple(stale), tuple(rejected))


# --- (c) at-least-once accounting ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What `check_at_least_once` found.

    ``lost``: acknowledged ids never delivered; ``duplicates``: id → times delivered (> 1);
    ``unexpected``: delivered ids that were never sent (not even with an unknown outcome).
    """

    sent: int
    delivered: int
    lost: frozenset[Hashable]
    duplicates: Mapping[Hashable, int] = field(default_factory=dict)
    unexpected: frozenset[Hashable] = frozenset()

    @property
    def ok(self) -> bool:
        """At least once: nothing lost, nothing invented."""
        return not self.lost and not self.unexpected

    @property
    def exactly_once(self) -> bool:
        return self.ok and not self.duplicates

    def __bool__(self) -> bool:
        return self.ok


def check_at_least_once(
    sent: Iterable[Hashable],
    delivered: Iterable[Hashable],
    *,
    maybe_sent: Iterable[Hashable] = (),
) -> DeliveryResult:
    """Account for every id: ``sent`` were acknowledged, ``delivered`` came out the other end.

    ``maybe_sent`` are ids whose send had an unknown outcome (``info``): they may be delivered
    (not unexpected) but need not be (not lost).
    """
    acknowledged = set(sent)
    possible = acknowledged | set(maybe_sent)
    counts = collections.Counter(delivered)
    return DeliveryResult(
        sent=len(acknowledged),
        delivered=sum(counts.values()),
        lost=frozenset(acknowledged - counts.keys()),
        duplicates={k: n for k, n in counts.items() if n > 1},
        unexpected=frozenset(counts.keys() - possible),
    )


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
