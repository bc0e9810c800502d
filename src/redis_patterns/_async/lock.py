"""AsyncLock and AsyncFencedStore: a lease lock with fencing tokens and a watchdog (and the
lease facade AsyncRedlock shares)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._background import Handle
from .._callbacks import acall_back
from .._core.lock import Acquired, FencedStoreCore, LeaseCore, LockCore
from .._core.replication import check_wait_replicas
from .._errors import LockTimeoutError
from .._plan import Plan
from .._runner import AsyncClient, AsyncRunner
from .._validate import Duration

__all__ = ["AsyncFencedStore", "AsyncLease", "AsyncLock"]


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


class AsyncLock(AsyncLease):
    """A lease on ``name``: at most one holder at a time, released automatically after ``ttl``.

    Acquire is one script (``SET NX PX`` plus the fence increment); release and extend compare
    the owner token inside the server, so a holder whose lease expired can never delete or
    extend the next holder's lock. The owner is this object (not a thread or a task): use one
    object per would-be holder.

    Args:
        client: a redis-py client (standalone or cluster).
        name: the lock's name; keys are ``{lock:<name>}`` and ``{lock:<name>}:fence``.
        ttl: the lease in seconds (float or timedelta): the lock frees itself this long after
            the last acquire/extend if its holder dies.
        timeout: how long `acquire` (and ``async with``) waits by default; ``None`` waits forever.
        auto_renew: run a watchdog that extends the lease every ``ttl / 3`` while held.
        max_hold: with ``auto_renew``, stop renewing this long after acquiring (the lock then
            expires within ``ttl``); ``None`` renews until release.
        on_lost: called (with this lock, from the watchdog) when a renewal finds the lock gone.
            Keep it short; e.g. cancel the task doing the protected work.
        wait_replicas: after acquiring, ``WAIT`` for this many replicas to confirm (at most
            min(1 s, ttl/3)); if fewer do, the lock is released and `LockError` raised. A
            mitigation against a failover handing the lock to a second holder, not a proof.
            The WAIT is pipelined with the acquire (still one round trip); standalone and
            Sentinel clients only (a cluster client is refused: it sends WAIT elsewhere).

    Raises:
        ConfigurationError: a bad name, a ttl that is not > 0 and finite, a negative timeout,
            or ``max_hold`` without ``auto_renew`` (before any I/O).
    """

    _core: LockCore

    def __init__(
        self,
        client: AsyncClient,
        name: str | bytes,
        ttl: Duration = 30.0,
        *,
        timeout: Duration | None = None,
        auto_renew: bool = False,
        max_hold: Duration | None = None,
        on_lost: Callable[[AsyncLock], object] | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self._runner = AsyncRunner(client)
        self._core = LockCore(
            name,
            ttl,
            timeout,
            auto_renew,
            max_hold,
            on_lost,
            check_wait_replicas(wait_replicas, cluster=self._runner.cluster),
            features=self._runner.features,
        )
        self._init_lease(on_lost)

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self._core.held else "free"
        name = self._core.name.decode(errors="replace")
        return f"<AsyncLock {name!r} {state} fence={self.fence}>"

    @property
    def fence(self) -> int | None:
        """The fencing token of the current (or last) acquisition; strictly increasing per name."""
        return self._core.fence

    async def acquire(self, blocking: bool = True, timeout: Duration | None = None) -> bool:
        """Take the lock, waiting with jittered exponential backoff while someone else holds it.

        Each attempt is one command. With asyncio, cancelling a waiting ``acquire`` is safe;
        cancelling it while its last attempt is in flight may leave a lease nobody knows of,
        which expires after ``ttl``.

        Args:
            blocking: wait for the lock (``True``) or try once (``False``).
            timeout: the longest wait in seconds; default: the lock's ``timeout``.

        Returns:
            ``True`` if acquired (`fence` and `token` are set), ``False`` if not.

        Raises:
            ConfigurationError: a bad timeout, or a timeout with ``blocking=False``.
            LockError: this object already holds the lock, or fewer than ``wait_replicas``
                replicas confirmed the acquisition (the lock was given back).
            BackendError: the server failed or did not answer.
        """
        return await self._acquire(self._core.acquire(blocking, timeout))

    async def release(self) -> None:
        """Release the lock if this object still holds it (one command; with asyncio it runs
        to completion even if the calling task is cancelled).

        Raises:
            LockNotOwnedError: never acquired, already released, lost, or expired and maybe
                taken by someone else (whose lock is left untouched).
            BackendError: the server failed; the lock stays ours, call `release` again.
        """
        self._stop_watch()
        await self._runner.run_shielded(self._core.release())

    async def extend(self, ttl: Duration | None = None) -> None:
        """Reset the remaining lease to ``ttl`` seconds (default: the lock's ttl); one command.

        Raises:
            ConfigurationError: a bad ttl (before any I/O).
            LockNotOwnedError: the lock is not ours any more (nothing is created or changed).
        """
        await self._runner.run(self._core.extend(ttl))

    async def locked(self) -> bool:
        """Whether anyone holds the lock right now."""
        return await self._runner.run(self._core.locked())

    async def owned(self) -> bool:
        """Whether the server still has this object's token on the lock."""
        return await self._runner.run(self._core.owned())

    async def ttl(self) -> float | None:
        """The lock's remaining lease in seconds (whoever holds it); ``None`` when free."""
        return await self._runner.run(self._core.ttl())

    async def __aenter__(self) -> AsyncLock:
        if not await self.acquire():
            raise LockTimeoutError(f"lock {self._core.name!r} not acquired within its timeout")
        return self


class AsyncFencedStore:
    """A resource that refuses writes from holders older than the newest it has seen.

    ``write(fence, field, value)`` is accepted only if ``fence`` is at least the highest fence
    accepted so far (one script); a paused or partitioned former lock holder is refused with
    `StaleFenceError`. Keys: ``{fenced:<name>}`` (hash of fields) and ``{fenced:<name>}:fence``.

    Args:
        client: a redis-py client (standalone or cluster).
        name: the resource's name.

    Raises:
        ConfigurationError: a bad name (before any I/O).
    """

    def __init__(self, client: AsyncClient, name: str | bytes) -> None:
        self._core = FencedStoreCore(name)
        self._runner = AsyncRunner(client)

    async def write(self, fence: int, field: str | bytes, value: str | bytes | int | float) -> None:
        """Set ``field`` to ``value`` if ``fence`` is not older than any accepted fence.

        Raises:
            ConfigurationError: fence not an int in [0, 2**53), or a bad field (before I/O).
            TypeError: value is not str, bytes, int or float.
            StaleFenceError: a higher fence was already accepted; nothing was written.
        """
        await self._runner.run(self._core.write(fence, field, value))

    async def read(self, field: str | bytes) -> bytes | str | None:
        """The value of ``field``, or ``None``."""
        return await self._runner.run(self._core.read(field))

    async def highest(self) -> int | None:
        """The highest fence accepted so far, or ``None``."""
        return await self._runner.run(self._core.highest())

    async def clear(self) -> None:
        """Delete the data and the fence record."""
        await self._runner.run(self._core.clear())
