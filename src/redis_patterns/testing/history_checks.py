"""Checkers of locks, fencing and delivery: overlapping holds, the fencing rule, at least once."""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .history_record import Event, History

__all__ = [
    "DeliveryResult",
    "FenceResult",
    "FencedResource",
    "FencedWrite",
    "Hold",
    "OverlapResult",
    "check_at_least_once",
    "check_fenced",
    "check_no_overlap",
    "holds_from_history",
]


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
