"""Lock and FencedStore logic (and the lease every lock shares): acquire with a fence,
compare-and-delete, watchdog, as plans."""

from __future__ import annotations

import random
import secrets
from typing import Any, ClassVar, NamedTuple

from .. import _metrics
from .._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    ConfigurationTypeError,
    LockError,
    LockNotOwnedError,
    StaleFenceError,
)
from .._keys import check_name, make_key
from .._plan import Command, Eval, Features, Now, Plan, Replicated, Sleep
from .._script import package_script
from .._validate import (
    check_bool,
    check_callable,
    check_int,
    duration_ms,
    optional_duration_ms,
)
from .backoff import backoff_delay

__all__ = [
    "FENCE_RETENTION_MS",
    "Acquired",
    "FencedStoreCore",
    "LeaseCore",
    "LockCore",
    "as_text",
]

# How long a fence counter lives after the acquisition that created it. Fences stay monotonic
# after it expires because a new counter starts from the server's clock (microseconds).
FENCE_RETENTION_MS = 7 * 24 * 3600 * 1000
MAX_FENCE = 2**53  # fences travel through Lua as doubles: exact below 2^53
# A waiter sleeps between 2.5 ms and a ceiling doubling from 5 ms to 200 ms (or ttl / 4).
WAIT_BASE = 0.005
WAIT_CAP = 0.2


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


class LockCore(LeaseCore):
    """State and plans shared by `Lock` and `AsyncLock`; the owner is this object, not a thread."""

    __slots__ = ("_features", "fence_key", "max_hold_ms", "wait_replicas")

    _held_hint = "; use one object per holder"
    _lost_hint = " (it expired or was taken)"

    def __init__(
        self,
        name: str | bytes,
        ttl: object,
        timeout: object,
        auto_renew: object,
        max_hold: object,
        on_lost: object,
        wait_replicas: object = 0,
        *,
        features: Features | None = None,
    ) -> None:
        super().__init__(name, ttl, timeout, auto_renew, on_lost)
        if self.ttl_ms < 3:
            raise ConfigurationError(f"ttl must be at least 3 ms, got {ttl!r} s")
        self.max_hold_ms = optional_duration_ms(max_hold, "max_hold")
        if self.max_hold_ms is not None and not auto_renew:
            raise ConfigurationError("max_hold only bounds renewal: it needs auto_renew=True")
        self.wait_replicas = check_int(wait_replicas, "wait_replicas", minimum=0)
        self.fence_key = make_key("lock", self.name, "fence")
        # Whether the server has DELIFEQ / SET IFEQ: the runner's record for the client, shared
        # with every other object on it; learnt by the first compare-and-delete that tries.
        self._features = Features() if features is None else features

    # --- plans ---------------------------------------------------------------------------

    def acquire(self, blocking: object = True, timeout: object = None) -> Plan[Acquired]:
        """Take the lock (waiting while ``blocking``); validates its arguments before any I/O."""
        wait = self._check_acquire(blocking, timeout)
        script = package_script("lock_acquire")
        token = secrets.token_hex(16)
        keys = (self.key, self.fence_key)
        args = (token, self.ttl_ms, FENCE_RETENTION_MS)
        rng: random.Random | None = None  # only a waiter needs one
        waits = 0
        cap = min(WAIT_CAP, self.ttl_ms / 4000)
        deadline: float | None = None
        started: float | None = None
        while True:
            sent_at = yield Now()
            if started is None:
                started = sent_at
                if wait is not None:
                    deadline = sent_at + wait
            take = Eval(script, keys, args)
            if self.wait_replicas:  # WAIT in the same round trip, on the script's connection
                raw, confirmed = yield Replicated(take, self.wait_replicas, self.replica_timeout_ms)
            else:
                raw, confirmed = (yield take), 0
            reply = int(raw)  # the fence (> 0) when acquired, else -1 - the holder's PTTL
            if reply > 0:
                if self.wait_replicas and confirmed < self.wait_replicas:
                    yield from self._give_back(token, confirmed)
                # Measured from before the request: the server's expiry is no earlier than this.
                self._granted(
                    token,
                    sent_at + self.ttl_ms / 1000,
                    fence=reply,
                    max_hold_until=(
                        None if self.max_hold_ms is None else sent_at + self.max_hold_ms / 1000
                    ),
                    started=started,
                    at=sent_at,
                )
                if not self.auto_renew:
                    return Acquired(True)
                return Acquired(True, (yield from self.renewal_delay()))
            if not blocking:
                self._not_acquired()
                return Acquired(False)
            now = yield Now()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                self._not_acquired()
                return Acquired(False)
            if rng is None:
                rng = random.Random()
            # No point sleeping past the holder's expiry (+1 ms); never past our deadline.
            holder_pttl = -1 - reply
            holder_left = holder_pttl / 1000 + 0.001 if holder_pttl > 0 else None
            limit = min(x for x in (left, holder_left, cap) if x is not None)
            delay = backoff_delay(waits, WAIT_BASE, cap, rng=rng, low=WAIT_BASE / 2)
            waits += 1
            yield Sleep(max(0.0, min(delay, limit)))

    @property
    def replica_timeout_ms(self) -> int:
        return max(1, min(1000, self.ttl_ms // 3))

    def _give_back(self, token: str, acked: int) -> Plan[None]:
        """Too few replicas confirmed the acquire: give the lock back and raise."""
        yield from self._compare_delete(token)
        raise LockError(
            f"lock {self.name!r} was acquired on the primary but only {acked} of "
            f"{self.wait_replicas} replicas confirmed within {self.replica_timeout_ms} ms; "
            "it was released again"
        )

    def release(self) -> Plan[None]:
        token = self._start_release()
        deleted = yield from self._compare_delete(token)
        self._released((yield Now()) if _metrics.on else None)
        if not deleted:
            raise LockNotOwnedError(
                f"lock {self.name!r} was no longer ours at release (it expired or was taken)"
            )

    def _compare_delete(self, token: str) -> Plan[bool]:
        native = self._features.delifeq
        if native is not False:
            try:
                reply = yield Command(("DELIFEQ", self.key, token))
            except (BackendUnavailableError, BackendTimeoutError):
                raise  # the command may have run: never fall back to a second delete
            except BackendError:
                if native:
                    raise
                # Refused without running: the server ("unknown command") or redis-py's cluster
                # router ("command doesn't exist") does not know DELIFEQ. Scripts from now on.
                self._features.delifeq = False
            else:
                self._features.delifeq = True
                return int(reply) == 1
        reply = yield package_script("lock_release").eval((self.key,), (token,))
        return int(reply) == 1

    def _compare_expire(self, token: str, ttl_ms: int) -> Plan[bool]:
        if self._features.delifeq:
            reply = yield Command(("SET", self.key, token, "IFEQ", token, "PX", ttl_ms))
            return reply is not None and reply is not False
        reply = yield package_script("lock_extend").eval((self.key,), (token, ttl_ms))
        return int(reply) == 1

    def extend(self, ttl: object = None) -> Plan[None]:
        """Reset the lease to ``ttl`` seconds (default: the lock's); checks before any I/O."""
        token, ttl_ms = self._check_extend(ttl)
        generation = self._generation
        sent_at = yield Now()
        ok = yield from self._compare_expire(token, ttl_ms)
        if generation != self._generation:
            return
        if not ok:
            self._lose(forget=True)
            raise LockNotOwnedError(f"lock {self.name!r} was no longer ours to extend")
        self._renewed(sent_at + ttl_ms / 1000)

    def renew(self) -> Plan[float | None]:
        """One watchdog tick: extend by ttl; returns the delay to the next tick or ``None``."""
        if not self._held or self._lost or self._token is None:
            return None
        generation = self._generation
        token = self._token
        now = yield Now()
        if self._max_hold_until is not None and now >= self._max_hold_until:
            return None  # stop renewing; the lock expires by itself within ttl
        try:
            ok = yield from self._compare_expire(token, self.ttl_ms)
        except BackendError:
            if generation != self._generation:
                return None
            # Outcome unknown: retry soon; once our validity has run out, the lock is gone.
            if self._valid_until is not None and now >= self._valid_until:
                self._lose(forget=False)
                return None
            return self.renew_interval / 3
        if generation != self._generation:
            return None  # released (or re-acquired) meanwhile
        if not ok:
            self._lose(forget=False)
            return None
        self._renewed(now + self.ttl_ms / 1000)
        return (yield from self.renewal_delay())

    def renewal_delay(self) -> Plan[float]:
        """Seconds until the next renewal: when 2/3 of the lease remain on our conservative
        clock (at once if a slow round trip already ate into it), at most ttl/3."""
        now: float = yield Now()
        if self._valid_until is None:
            return self.renew_interval
        left: float = self._valid_until - now - 2 * self.renew_interval
        return max(0.0, min(self.renew_interval, left))

    def locked(self) -> Plan[bool]:
        reply = yield Command(("EXISTS", self.key))
        return int(reply) == 1

    def owned(self) -> Plan[bool]:
        if self._token is None or not self._held:
            return False
        reply = yield Command(("GET", self.key))
        return as_text(reply) == self._token

    def ttl(self) -> Plan[float | None]:
        reply = int((yield Command(("PTTL", self.key))))
        if reply == -2:
            return None
        if reply == -1:
            return float("inf")
        return reply / 1000


class FencedStoreCore:
    """State and plans shared by `FencedStore` and `AsyncFencedStore`."""

    __slots__ = ("fence_key", "key", "name")

    def __init__(self, name: str | bytes) -> None:
        self.name = check_name(name)
        self.key = make_key("fenced", self.name)
        self.fence_key = make_key("fenced", self.name, "fence")

    def write(self, fence: object, field: object, value: object) -> Plan[None]:
        fence_value = check_int(fence, "fence", minimum=0)
        if fence_value >= MAX_FENCE:
            raise ConfigurationError(f"fence must be < 2**53, got {fence_value}")
        field_value = check_name(field, "field", raw_key=True)
        if isinstance(value, bool) or not isinstance(value, str | bytes | int | float):
            raise ConfigurationTypeError(
                f"value must be str, bytes, int or float, not {type(value).__name__}"
            )
        ok, highest = yield package_script("fenced_write").eval(
            (self.key, self.fence_key), (fence_value, field_value, value)
        )
        if int(ok) != 1:
            raise StaleFenceError(
                f"write to {self.name!r} with fence {fence_value} refused: "
                f"fence {int(highest)} was already accepted"
            )

    def read(self, field: object) -> Plan[bytes | str | None]:
        field_value = check_name(field, "field", raw_key=True)
        reply: bytes | str | None = yield Command(("HGET", self.key, field_value))
        return reply

    def highest(self) -> Plan[int | None]:
        reply = yield Command(("GET", self.fence_key))
        return None if reply is None else int(reply)

    def clear(self) -> Plan[None]:
        yield Command(("DEL", self.key, self.fence_key))
