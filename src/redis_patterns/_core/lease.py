"""What `LockCore` and `RedlockCore` share: one lease state, its transitions and its checks."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from .. import _metrics
from .._errors import ConfigurationError, LockError, LockNotOwnedError
from .._keys import check_name, make_key
from .._plan import Plan
from .._validate import check_bool, check_callable, duration_ms

__all__ = ["Acquired", "LeaseCore", "as_text"]


class Acquired(NamedTuple):
    """What an acquire plan returns: all the facade needs, so acquiring is one `run`."""

    acquired: bool
    renew_in: float | None = None
    """Seconds until the watchdog's first renewal; ``None``: no watchdog to start."""


def as_text(reply: Any) -> str | None:
    """A ``GET`` reply as text; ``None`` for no value (or a fan-out's failed reply)."""
    if reply is None or isinstance(reply, BaseException):
        return None
    return reply.decode() if isinstance(reply, bytes) else str(reply)


class LeaseCore:
    """A lease held by this object (not a thread or a task): its state and how it changes.

    ``_generation`` counts acquisitions and releases, so a renewal that was in flight when the
    lease changed hands knows its answer is stale. Subclasses add the plans (``acquire``,
    ``release``, ``extend``, ``renew``, ...) and call the transitions below.
    """

    __slots__ = (
        "_fence",
        "_generation",
        "_granted_at",
        "_held",
        "_lost",
        "_max_hold_until",
        "_token",
        "_valid_until",
        "_validity",
        "auto_renew",
        "key",
        "name",
        "timeout_ms",
        "ttl_ms",
    )

    # How errors name the lease, and what they add when this object already holds it.
    _what: ClassVar[str] = "lock"
    _held_hint: ClassVar[str] = ""
    _lost_hint: ClassVar[str] = ""

    def __init__(
        self, name: str | bytes, ttl: object, timeout: object, auto_renew: object, on_lost: object
    ) -> None:
        self.name = check_name(name)
        self.key = make_key("lock", self.name)
        self.ttl_ms = duration_ms(ttl, "ttl")
        self.timeout_ms = (
            None if timeout is None else duration_ms(timeout, "timeout", allow_zero=True)
        )
        self.auto_renew = check_bool(auto_renew, "auto_renew")
        check_callable(on_lost, "on_lost", optional=True)
        self._token: str | None = None
        self._fence: int | None = None
        self._held = False
        self._lost = False
        self._generation = 0
        self._valid_until: float | None = None
        self._validity: float | None = None
        self._max_hold_until: float | None = None
        self._granted_at = 0.0

    # --- state ---------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def fence(self) -> int | None:
        return self._fence

    @property
    def held(self) -> bool:
        return self._held

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def validity(self) -> float | None:
        return self._validity

    @property
    def valid_until(self) -> float | None:
        return self._valid_until if self._held else None

    @property
    def renew_interval(self) -> float:
        return self.ttl_ms / 3000

    def renew(self) -> Plan[float | None]:
        """One watchdog tick: the delay to the next, or ``None`` to stop."""
        raise NotImplementedError

    # --- checks (no I/O) -----------------------------------------------------------------

    def _check_acquire(self, blocking: object, timeout: object) -> float | None:
        """Validate acquire's arguments; the longest wait in seconds (``None``: no limit)."""
        if not check_bool(blocking, "blocking") and timeout is not None:
            raise ConfigurationError("a timeout makes no sense with blocking=False")
        if self._held and not self._lost:
            raise LockError(
                f"this {self._what} object already holds {self.name!r}{self._held_hint}"
            )
        if timeout is not None:
            return duration_ms(timeout, "timeout", allow_zero=True) / 1000
        return None if self.timeout_ms is None else self.timeout_ms / 1000

    def check_owned(self) -> None:
        """Raise `LockNotOwnedError` unless this object believes it holds the lease."""
        if not self._held:
            raise LockNotOwnedError(f"{self._what} {self.name!r} is not held by this object")
        if self._lost:
            self._held = False
            raise LockNotOwnedError(f"{self._what} {self.name!r} was lost{self._lost_hint}")

    def _check_extend(self, ttl: object) -> tuple[str, int]:
        """Validate extend's ttl (default: the lease's) and ownership: ``(token, ttl_ms)``."""
        ttl_ms = self.ttl_ms if ttl is None else duration_ms(ttl, "ttl")
        self.check_owned()
        assert self._token is not None
        return self._token, ttl_ms

    # --- transitions ---------------------------------------------------------------------

    def _granted(
        self,
        token: str,
        valid_until: float,
        *,
        fence: int | None = None,
        validity: float | None = None,
        max_hold_until: float | None = None,
        started: float,
        at: float,
    ) -> None:
        """The lease is ours, surely until ``valid_until`` (a ``Now`` reading), by the attempt
        sent ``at``, of an acquire whose first attempt was sent at ``started``."""
        if _metrics.on:
            label = _metrics.lock_label(self.name)
            _metrics.LOCK_ACQUISITIONS.record((label, "acquired"))
            _metrics.LOCK_WAIT_SECONDS.record((label,), at - started)
        self._granted_at = at
        self._generation += 1
        self._token = token
        self._fence = fence
        self._held = True
        self._lost = False
        self._validity = validity
        self._valid_until = valid_until
        self._max_hold_until = max_hold_until

    def _not_acquired(self) -> None:
        """An acquire gave up: the lease was busy, or its wait timed out."""
        if _metrics.on:
            _metrics.LOCK_ACQUISITIONS.record((_metrics.lock_label(self.name), "failed"))

    def _renewed(self, valid_until: float, validity: float | None = None) -> None:
        if _metrics.on:
            _metrics.LOCK_RENEWALS.record((_metrics.lock_label(self.name),))
        self._validity = validity
        self._valid_until = valid_until

    def _lose(self, *, forget: bool) -> None:
        """The lease is gone. ``forget`` when the caller is told now (an extend that raises);
        a loss the watchdog finds keeps ``held`` so the next call reports "was lost"."""
        if _metrics.on and not self._lost:
            _metrics.LOCK_LOSSES.record((_metrics.lock_label(self.name),))
        self._lost = True
        if forget:
            self._held = False

    def _start_release(self) -> str:
        """Check ownership and return the token; a renewal in flight is stale from now on."""
        self.check_owned()
        assert self._token is not None
        self._generation += 1
        return self._token

    def _released(self, now: float | None) -> None:
        """Released; ``now`` (a ``Now`` reading, ``None`` with metrics off) ends the hold."""
        if now is not None and _metrics.on:
            held = now - self._granted_at
            _metrics.LOCK_HOLD_SECONDS.record((_metrics.lock_label(self.name),), held)
        self._held = False
        self._valid_until = None
