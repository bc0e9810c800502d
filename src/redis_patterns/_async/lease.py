"""AsyncLease: what AsyncLock and AsyncRedlock share (identity, the watchdog, loss callback)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._background import Handle
from .._callbacks import acall_back
from .._core.lease import Acquired, LeaseCore
from .._plan import Plan
from .._runner import AsyncRunner

__all__ = ["AsyncLease"]


class AsyncLease:
    """Base of the lock facades: subclasses set ``_core`` (a `LeaseCore` whose ``acquire``
    plan returns `Acquired`), ``_runner`` and call `_init_lease`."""

    _core: LeaseCore
    _runner: AsyncRunner

    def _init_lease(self, on_lost: Callable[[Any], object] | None) -> None:
        self._on_lost = on_lost
        self._watch: Handle | None = None
        self._notified = False

    @property
    def name(self) -> bytes:
        """The lock's name."""
        return self._core.name

    @property
    def key(self) -> bytes:
        """The lock's key, ``{lock:<name>}`` (the same on every server of a Redlock)."""
        return self._core.key

    @property
    def token(self) -> str | None:
        """The random owner id of the current (or last) acquisition; ``None`` before any."""
        return self._core.token

    @property
    def lost(self) -> bool:
        """True once the watchdog (or `extend`) found that the lease had been lost."""
        return self._core.lost

    @property
    def valid_until(self) -> float | None:
        """``time.monotonic()`` deadline before which the lease is certainly still ours
        (``None`` when not held)."""
        return self._core.valid_until

    async def release(self) -> None:
        raise NotImplementedError

    async def _acquire(self, plan: Plan[Acquired]) -> bool:
        """Run an acquire plan; start the watchdog when it says when to renew."""
        acquired, renew_in = await self._runner.run(plan)
        if renew_in is not None:
            self._start_watch(renew_in)
        return acquired

    def _start_watch(self, first_delay: float) -> None:
        """Renew on the process's shared watchdog, first after ``first_delay`` seconds.

        The watchdog holds this object weakly (the job is the plain function, not a bound
        method): a lock dropped while held stops renewing, warns, and expires within its ttl.
        """
        self._notified = False
        name = self._core.name.decode(errors="replace")
        dropped = (
            f"{type(self).__name__} {name!r} was garbage-collected while held with auto_renew:"
            " its renewals stopped and it expires within its ttl; release it (or use"
            " `with`) before dropping the last reference"
        )
        self._watch = self._runner.repeat(_renew, self, first_delay, dropped=dropped)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


async def _renew(lease: AsyncLease) -> float | None:
    """One watchdog tick of ``lease`` (a function of it, so the scheduler can hold it weakly)."""
    delay = await lease._runner.run(lease._core.renew())
    if lease._core.lost and not lease._notified:
        lease._notified = True
        if lease._on_lost is not None:
            await acall_back(lease._on_lost, lease)
    return delay
