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

The parts, all re-exported here: ``history_record`` (`Event`, `History`), ``history_checks``
(a, b, c) and ``history_linearizable`` (d).
"""

from __future__ import annotations

from .history_checks import (
    DeliveryResult,
    FencedResource,
    FencedWrite,
    FenceResult,
    Hold,
    OverlapResult,
    check_at_least_once,
    check_fenced,
    check_no_overlap,
    holds_from_history,
)
from .history_linearizable import (
    UNKNOWN,
    LinearizabilityResult,
    LinOp,
    Model,
    check_linearizable,
    kv_model,
    register_model,
)
from .history_record import Event, History, Status, monotonic

# returned by History.invoke, and importable from here before the split (not in __all__ then)
from .history_record import Operation as Operation

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
