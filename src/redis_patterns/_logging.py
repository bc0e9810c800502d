"""Coalesced warnings: the first of a kind at once, then one line per interval with its count.

An outage makes every request hit the same failure; logging each one buries the log (2,000
requests once logged 2,002 identical lines). `coalesced` logs the first occurrence of a kind at
once, counts the ones that follow within ``interval`` seconds, and then logs one line with the
count, e.g. ``... (repeated 1,234 times in the last 60 s)``: either on the next occurrence after
the interval, or from a timer when the occurrences stopped, so the count is never lost. The
record carries the count as ``record.repeated`` (0 on a first line) for structured logging.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = ["DEFAULT_INTERVAL", "WarningCoalescer", "coalesced", "error_kind", "reset"]

DEFAULT_INTERVAL = 60.0
_MAX_KINDS = 1024  # kinds include a queue or channel name: bound the memory they can take


@dataclass
class _Kind:
    logger: logging.Logger
    level: int
    last: float  # when a line for this kind was last written
    suppressed: int = 0
    msg: str = ""
    args: tuple[object, ...] = field(default_factory=tuple)


def _seconds(value: float) -> str:
    if value < 10:
        return f"{value:.1f} s"
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


class WarningCoalescer:
    """Rate-limits log lines per kind; thread-safe.

    Args:
        interval: seconds between two lines of one kind.
        clock: a monotonic clock (injected by tests).
        timer: ``timer(delay, fn)`` starts a one-shot timer that calls ``fn`` (a daemon thread
            by default); ``None`` means no timer: counts are written on the next occurrence or
            by `flush_due` only.
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], None] | None = None,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._timer = timer
        self._kinds: dict[tuple[str, Hashable], _Kind] = {}
        self._lock = threading.Lock()
        self._timer_due: float | None = None

    def log(
        self,
        logger: logging.Logger,
        kind: Hashable,
        level: int,
        msg: str,
        *args: object,
        stacklevel: int = 1,
    ) -> bool:
        """Log ``msg % args`` unless a line of ``kind`` was written within the interval.

        ``stacklevel`` as in `logging.Logger.log`, counted from the caller of this method: the
        record names the line that reported the problem, not this module.

        Returns:
            Whether a line was written now.
        """
        now = self._clock()
        key = (logger.name, kind)
        elapsed = 0.0
        with self._lock:
            state = self._kinds.get(key)
            if state is None:
                if len(self._kinds) >= _MAX_KINDS:
                    self._kinds.pop(next(iter(self._kinds)))
                self._kinds[key] = _Kind(logger, level, now)
                repeated = 0
            elif now - state.last >= self.interval:
                repeated = state.suppressed + 1 if state.suppressed else 0
                elapsed = now - state.last
                state.last, state.suppressed = now, 0
            else:
                state.suppressed += 1
                state.level, state.msg, state.args = level, msg, args
                self._arm(state.last + self.interval)
                return False
        if repeated:
            self._write(logger, level, msg, args, repeated, elapsed, stacklevel + 2)
        else:
            logger.log(level, msg, *args, extra={"repeated": 0}, stacklevel=stacklevel + 1)
        return True

    def flush_due(self, *, everything: bool = False) -> int:
        """Write the count of each kind whose interval ended (all of them with ``everything``).

        Returns:
            How many lines were written.
        """
        now = self._clock()
        due: list[tuple[_Kind, int, float]] = []
        with self._lock:
            self._timer_due = None
            pending = [s for s in self._kinds.values() if s.suppressed]
            for state in pending:
                if everything or now - state.last >= self.interval:
                    due.append((state, state.suppressed, now - state.last))
                    state.last, state.suppressed = now, 0
                else:
                    self._arm(state.last + self.interval)
        for state, count, elapsed in due:
            self._write(state.logger, state.level, state.msg, state.args, count, elapsed)
        return len(due)

    def reset(self) -> None:
        """Forget every kind and its count (the next occurrence of each is logged at once)."""
        with self._lock:
            self._kinds.clear()

    def _arm(self, due: float) -> None:
        # Called with the lock held: one timer at a time, for the earliest deadline.
        if self._timer is None or (self._timer_due is not None and self._timer_due <= due):
            return
        self._timer_due = due
        self._timer(max(0.0, due - self._clock()), self._flush_on_timer)

    def _flush_on_timer(self) -> None:
        self.flush_due()

    @staticmethod
    def _write(
        logger: logging.Logger,
        level: int,
        msg: str,
        args: tuple[object, ...],
        count: int,
        elapsed: float,
        stacklevel: int = 1,
    ) -> None:
        logger.log(
            level,
            msg + " (repeated %s times in the last %s)",
            *args,
            f"{count:,}",
            _seconds(elapsed),
            extra={"repeated": count},
            stacklevel=stacklevel,
        )


def _daemon_timer(delay: float, fn: Callable[[], None]) -> None:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.name = "redis-patterns-log-flush"
    timer.start()


_shared = WarningCoalescer(timer=_daemon_timer)
atexit.register(_shared.flush_due, everything=True)


def coalesced(
    logger: logging.Logger, kind: Hashable, msg: str, *args: object, level: int = logging.WARNING
) -> None:
    """Log ``msg % args`` at ``level``, coalesced per ``(logger, kind)`` (see the module doc)."""
    _shared.log(logger, kind, level, msg, *args, stacklevel=2)


def error_kind(exc: BaseException) -> tuple[str, str]:
    """A kind for a retried backend error: its class and the start of its text.

    A refused connection and a server still loading its data are both "unavailable", but an
    operator wants to see each once.
    """
    return type(exc).__name__, str(exc)[:80]


def reset() -> None:
    """Forget what was logged so far (the pytest plugin calls this before each test)."""
    _shared.reset()
