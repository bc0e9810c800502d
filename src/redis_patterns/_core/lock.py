"""Lock and FencedStore logic: acquire with a fence, compare-and-delete, watchdog, as plans."""

from __future__ import annotations

import random
import secrets

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
from .._validate import check_int, optional_duration_ms
from .backoff import backoff_delay
from .lease import Acquired, LeaseCore, as_text

__all__ = [
    "FENCE_RETENTION_MS",
    "FencedStoreCore",
    "LockCore",
]

# How long a fence counter lives after the acquisition that created it. Fences stay monotonic
# after it expires because a new counter starts from the server's clock (microseconds).
FENCE_RETENTION_MS = 7 * 24 * 3600 * 1000
MAX_FENCE = 2**53  # fences travel through Lua as doubles: exact below 2^53
# A waiter sleeps between 2.5 ms and a ceiling doubling from 5 ms to 200 ms (or ttl / 4).
WAIT_BASE = 0.005
WAIT_CAP = 0.2


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
