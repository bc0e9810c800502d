"""Recording a history: `Event`s of operations, by threads or processes, in memory or a file."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = ["Event", "History", "Operation", "Status", "monotonic"]

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
