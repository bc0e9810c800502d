"""AsyncRedlock: the Redlock algorithm over N independent servers (majority + validity)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._core.redlock import RedlockCore
from .._errors import ConfigurationError, LockTimeoutError
from .._runner import AsyncClient, AsyncRunner, node_address
from .._validate import Duration
from .lock import AsyncLease

__all__ = ["AsyncRedlock"]


class AsyncRedlock(AsyncLease):
    """A lease held on a majority of N independent servers (the seed's Redlock algorithm).

    Acquire sends ``SET key token NX PX ttl`` to every server at once (one command per server,
    each bounded by ``node_timeout``) and succeeds when a majority granted it and some validity
    is left: ``validity = ttl - elapsed - (ttl * drift_factor + 2 ms)``. A failed attempt, a
    release and a failed extension delete our token on every server, including those that
    refused or did not answer. Mutual exclusion holds only within the validity and under the
    timing assumptions in ``docs/locks.md``; there is no fencing token (`fence` is ``None``):
    see the docs for why one cannot be made monotonic here.

    The constructor does no I/O: servers are told apart by address (host:port or socket
    path); call `verify_servers` once to also compare the servers' ``run_id``.

    Args:
        clients: at least 3 standalone redis-py clients, one per independent server. Give them
            a ``socket_timeout``: a hung server otherwise holds a connection forever.
        name: the lock's name; the key on every server is ``{lock:<name>}``.
        ttl: the lease in seconds.
        drift_factor: clock drift allowance as a fraction of ttl, within [0, 0.1].
        retries: extra attempts a blocking `acquire` makes after the first.
        retry_delay: the wait between attempts is random in [retry_delay / 2, retry_delay].
        node_timeout: the most one attempt waits for the servers; must be < ttl / N
            (default: min(0.5 s, ttl / 2N)).
        timeout: the default longest wait of `acquire` (``None``: bounded by retries only).
        restart_guard: the spec's "delayed restart", enforced in-band: a server that lost its
            data (restart without persistence) gets no vote for this many seconds (>= ttl;
            use the longest ttl any holder of this name uses). Each server keeps a marker key
            ``{redlock:epoch}``; a server first seen without it also abstains for this long,
            unless you pre-seed it (``SET {redlock:epoch} 0``) when provisioning. Acquire then
            runs one script per server instead of ``SET``. ``None`` (default): no guard.
        auto_renew: extend on every server every ``ttl / 3`` while held (the shared watchdog
            thread/task); an extension that misses the majority or the validity marks the lock
            `lost`, releases it everywhere and calls ``on_lost``.
        on_lost: called with this lock when the watchdog finds it lost.

    Raises:
        ConfigurationError: fewer than 3 clients, the same server twice, bad durations, a
            drift factor outside [0, 0.1], node_timeout >= ttl / N or restart_guard < ttl
            (before any I/O).
        TypeError: a cluster client or a client of the wrong flavour (sync vs asyncio).
    """

    _core: RedlockCore

    def __init__(
        self,
        clients: Sequence[AsyncClient],
        name: str | bytes,
        ttl: Duration = 30.0,
        *,
        drift_factor: float = 0.01,
        retries: int = 3,
        retry_delay: Duration = 0.2,
        node_timeout: Duration | None = None,
        timeout: Duration | None = None,
        restart_guard: Duration | None = None,
        auto_renew: bool = False,
        on_lost: Callable[[AsyncRedlock], object] | None = None,
    ) -> None:
        if not isinstance(clients, list | tuple):
            raise ConfigurationError("clients must be a list or tuple of redis-py clients")
        self._runner = AsyncRunner(list(clients))
        addresses = [node_address(client) for client in clients]
        self._core = RedlockCore(
            addresses,
            name,
            ttl,
            drift_factor,
            retries,
            retry_delay,
            node_timeout,
            timeout,
            restart_guard,
            auto_renew,
            on_lost,
        )
        self._init_lease(on_lost)

    def __repr__(self) -> str:
        state = "held" if self._core.held else "free"
        name = self._core.name.decode(errors="replace")
        return f"<AsyncRedlock {name!r} on {self._core.nodes} servers {state}>"

    @property
    def quorum(self) -> int:
        """How many servers must grant the lock: N // 2 + 1."""
        return self._core.quorum

    @property
    def fence(self) -> None:
        """Always ``None``: Redlock cannot issue monotonic fencing tokens (see the docs)."""
        return None

    @property
    def validity(self) -> float | None:
        """Seconds of guaranteed ownership left when the last acquire/extend completed."""
        return self._core.validity

    async def acquire(self, blocking: bool = True, timeout: Duration | None = None) -> bool:
        """Try to take the lock on a majority of servers, up to ``retries + 1`` attempts.

        Args:
            blocking: retry (``True``) or make one attempt (``False``).
            timeout: stop retrying after this many seconds (default: the lock's ``timeout``).

        Returns:
            ``True`` if acquired with some validity left; ``False`` otherwise (nothing of
            ours is left on any server that answered the clean-up).

        Raises:
            ConfigurationError: a bad timeout, or a timeout with ``blocking=False``.
            LockError: this object already holds the lock.
        """
        return await self._acquire(self._core.acquire(blocking, timeout))

    async def release(self) -> None:
        """Delete our token on every server (one command per server; with asyncio, shielded
        from cancellation).

        Raises:
            LockNotOwnedError: never acquired, already released, or our token was on fewer
                than a majority of servers or the validity had run out (the lock may have
                been someone else's meanwhile).
        """
        self._stop_watch()
        await self._runner.run_shielded(self._core.release())

    async def extend(self, ttl: Duration | None = None) -> None:
        """Reset the lease to ``ttl`` on every server holding our token; counts on a majority.

        Raises:
            ConfigurationError: a bad ttl (before any I/O).
            LockNotOwnedError: fewer than a majority extended in time; the lock is then
                released everywhere and marked `lost`.
        """
        await self._runner.run(self._core.extend(ttl))

    async def locked(self) -> bool:
        """Whether a majority of servers hold the key (anyone's)."""
        return await self._runner.run(self._core.locked())

    async def owned(self) -> bool:
        """Whether a majority still hold our token and the validity has not run out."""
        return await self._runner.run(self._core.owned())

    async def ttl(self) -> float | None:
        """Seconds for which a majority of servers still hold the key; ``None`` if they don't."""
        return await self._runner.run(self._core.ttl())

    async def verify_servers(self) -> None:
        """Check (one ``INFO server`` per server) that the servers are really distinct.

        Raises:
            ConfigurationError: two clients reach the same server (same ``run_id``), e.g.
                ``localhost`` and ``127.0.0.1`` on one port.
            BackendError: a server could not be asked.
        """
        await self._runner.run(self._core.verify_servers())

    async def __aenter__(self) -> AsyncRedlock:
        if not await self.acquire():
            raise LockTimeoutError(f"Redlock {self._core.name!r} not acquired")
        return self
