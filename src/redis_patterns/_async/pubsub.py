"""AsyncPublisher and AsyncSubscriber: Pub/Sub that reconnects by itself and counts its gaps."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from .._background import AsyncDaemon
from .._callbacks import acall_back
from .._core.pubsub import Gap, Message, PublisherCore, SubscriberCore
from .._errors import BackendError, BackendUnavailableError, ConfigurationError
from .._logging import coalesced
from .._pubsub_async import AsyncPubSubTransport
from .._runner import AsyncClient, AsyncRunner
from .._validate import check_callable, duration_ms

__all__ = ["AsyncPublisher", "AsyncSubscriber"]

log = logging.getLogger("redis_patterns.pubsub")

# How long a (re)subscription may take to be confirmed before the link counts as broken.
_CONFIRM_TIMEOUT = 5.0


class AsyncPublisher:
    """Publishes messages to channels (fire-and-forget: at-most-once, nothing is stored).

    Args:
        client: a redis-py client of this class's flavour (standalone or cluster).
        sharded: use ``SPUBLISH`` (sharded Pub/Sub, Redis 7+): on a cluster the message stays on
            the shard owning the channel's slot instead of being broadcast to every node.

    Raises:
        TypeError: ``client`` is a redis-py client of the other flavour (sync vs asyncio).
    """

    def __init__(self, client: AsyncClient, *, sharded: bool = False) -> None:
        self._core = PublisherCore(sharded)
        self._runner = AsyncRunner(client)

    async def publish(self, channel: str | bytes, message: object) -> int:
        """Send ``message`` to everyone subscribed to ``channel`` right now (one command).

        ``message`` may be bytes, str (sent as UTF-8) or any JSON-serializable value.

        Returns:
            How many subscribers received it (on a cluster, those of the node that ran the
            command, always the client's default node, or of the shard for ``sharded``). 0
            means nobody was listening: the message is gone.

        Raises:
            ConfigurationError: an empty channel, or a message that cannot be serialized.
        """
        return await self._runner.run(self._core.publish(channel, message))


class AsyncSubscriber:
    """Receives messages from channels and glob patterns, reconnecting by itself.

    Iterate over it (``for`` / ``async for``) or call `get`. When the connection or
    the server drops, it reconnects with backoff (first retry at once, then 25 ms doubling to
    ``max_backoff``), resubscribes to every channel and pattern, and counts a *gap*: a period in
    which messages may have been missed, since Pub/Sub stores nothing. ``on_gap`` is called with
    each `Gap` once it is over (resynchronize from your source of truth there). A link that
    stays silent is pinged every ``health_check_interval`` seconds and declared dead when the
    pong does not come back within another interval (a half-open connection).

    ``on_state(True)`` is called each time every subscription is confirmed (the first time and
    after each reconnection) and ``on_state(False)`` when the link is lost or the subscriber
    closed: whatever the messages keep fresh may have changed unseen in between.

    It uses dedicated connections (not the client's pool), built from the client's settings.
    One reader (thread or task) at a time, or `run_in_background`; `subscribe` and friends
    may be called from elsewhere while it reads.

    Args:
        client: a redis-py client of this class's flavour (standalone or cluster).
        channels: channels to subscribe to.
        patterns: glob patterns to subscribe to (``orders.*``); not with ``sharded``.
        sharded: sharded Pub/Sub (``SSUBSCRIBE``, Redis 7+): on a cluster one link per shard.
        on_gap: called with a `Gap` after each reconnection.
        on_state: called with ``True`` when subscribed, ``False`` when not any more.
        health_check_interval: seconds of silence before a PING.
        max_backoff: the longest wait between reconnection attempts, in seconds.

    Raises:
        ConfigurationError: an empty channel or pattern name, patterns with ``sharded``, or
            invalid durations (before any I/O).
        TypeError: ``client`` is a redis-py client of the other flavour (sync vs asyncio).
    """

    def __init__(
        self,
        client: AsyncClient,
        channels: Iterable[str | bytes] = (),
        patterns: Iterable[str | bytes] = (),
        *,
        sharded: bool = False,
        on_gap: Callable[[Gap], object] | None = None,
        on_state: Callable[[bool], object] | None = None,
        health_check_interval: float = 5.0,
        max_backoff: float = 0.5,
    ) -> None:
        self._core = SubscriberCore(
            channels,
            patterns,
            sharded=sharded,
            health_check_interval=health_check_interval,
            max_backoff=max_backoff,
        )
        check_callable(on_gap, "on_gap", optional=True)
        check_callable(on_state, "on_state", optional=True)
        self._transport = AsyncPubSubTransport(client)
        self._on_gap = on_gap
        self._on_state = on_state
        self._up = False  # what on_state was last told
        self._reader: AsyncDaemon | None = None
        self._backlog: collections.deque[Message] = collections.deque()
        self._changes: list[tuple[bool, set[bytes], set[bytes]]] = []
        self._reading = False
        self._closed = False
        self.last_gap: Gap | None = None

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed to (restored after every reconnection)."""
        return frozenset(c.decode("utf-8", "surrogateescape") for c in self._core.channels)

    @property
    def patterns(self) -> frozenset[str]:
        """The patterns subscribed to."""
        return frozenset(p.decode("utf-8", "surrogateescape") for p in self._core.patterns)

    @property
    def gaps(self) -> int:
        """How many times the link broke (each a period in which messages may have been lost)."""
        return self._core.gaps

    @property
    def connected(self) -> bool:
        """True while the link is up and every subscription confirmed."""
        return self._core.connected and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def background_running(self) -> bool:
        """Whether `run_in_background`'s reader runs (an async one: on the loop running now)."""
        return self._reader is not None and self._reader.alive and not self._closed

    async def start(self) -> None:
        """Connect and subscribe now (`get` does it lazily), waiting for the confirmations.

        Raises:
            BackendUnavailableError: the server cannot be reached (nothing is retried here).
        """
        if not self._core.connected:
            async with self._transport.read_lock:
                await self._connect()

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (``None``: until one comes).

        Reconnects as needed while waiting. Returns ``None`` on timeout or once closed.

        Raises:
            ConfigurationError: a negative or non-finite ``timeout``.
        """
        if timeout is not None:
            timeout = duration_ms(timeout, "timeout", allow_zero=True) / 1000
        deadline = None if timeout is None else time.monotonic() + timeout
        self._reading = True
        try:
            return await self._next(deadline)
        finally:
            self._reading = False
            if self._closed:
                await self._release()

    def run_in_background(self, on_message: Callable[[Message], object]) -> None:
        """Read in the background, calling ``on_message(message)`` for each message.

        The reader is a task of the running event loop (`AsyncSubscriber`; an async
        ``on_message`` is awaited) or a daemon thread (`Subscriber`). It reconnects, reports
        gaps, pings and calls ``on_state`` as `get` does; a failing ``on_message`` is logged and
        reading goes on. `close` / `aclose` stops it (waiting up to a second for it).

        Raises:
            ConfigurationError: the subscriber is closed, or reads in the background already.
            ConfigurationTypeError: ``on_message`` is not callable.
        """
        check_callable(on_message, "on_message")
        if self._closed:
            raise ConfigurationError("the subscriber is closed")
        if self.background_running:
            raise ConfigurationError("the subscriber reads in the background already")
        self._reader = AsyncDaemon(
            self._read_in_background, on_message, name="redis-patterns-subscriber"
        )

    def __aiter__(self) -> AsyncSubscriber:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def subscribe(self, *channels: str | bytes) -> None:
        """Add channels (confirmed before returning, unless another thread or task is reading)."""
        await self._change(True, self._core.add(channels, "channel"), set())

    async def unsubscribe(self, *channels: str | bytes) -> None:
        """Remove channels."""
        await self._change(False, self._core.remove(channels, "channel"), set())

    async def psubscribe(self, *patterns: str | bytes) -> None:
        """Add glob patterns."""
        await self._change(True, set(), self._core.add(patterns, "pattern"))

    async def punsubscribe(self, *patterns: str | bytes) -> None:
        """Remove glob patterns."""
        await self._change(False, set(), self._core.remove(patterns, "pattern"))

    async def aclose(self) -> None:
        """Stop: iteration ends and the link is closed (by the reader, if one is reading)."""
        self._closed = True
        if not self._reading:
            await self._release()
        if self._reader is not None:
            await self._reader.join(1.0)

    async def __aenter__(self) -> AsyncSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals --------------------------------------------------------------------------

    async def _next(self, deadline: float | None) -> Message | None:
        while not self._closed:
            if self._backlog:
                return self._backlog.popleft()
            if not self._core.connected:
                await self._reconnect(deadline)
            else:
                async with self._transport.read_lock:  # one read slice: a subscriber waits
                    message = await self._read_once(deadline)  # at most that long
                if message is not None:
                    return message
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    async def _read_in_background(self, on_message: Callable[[Message], object]) -> None:
        self._reading = True
        try:
            while not self._closed:
                try:
                    message = await self._next(None)
                except Exception as exc:  # not a link failure (those are handled): start over
                    coalesced(log, ("reader", type(exc)), "background reader failed: %r", exc)
                    await self._lost(exc)
                    await self._transport.sleep(0.05)
                    continue
                if message is None:
                    continue
                try:
                    await acall_back(on_message, message)
                except Exception as exc:  # the handler's bug: log it, keep reading
                    coalesced(log, ("handler", type(exc)), "on_message failed: %r", exc)
        finally:
            self._reading = False
            await self._release()

    async def _announce(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            if self._on_state is not None:
                await acall_back(self._on_state, up)

    async def _release(self) -> None:
        await self._transport.close()
        await self._announce(False)

    async def _lost(self, error: BaseException) -> None:
        self._core.on_lost(time.monotonic(), error)
        await self._announce(False)  # before anything else: what it keeps fresh is suspect now
        await self._transport.close()

    async def _connect(self) -> None:
        channels, patterns, shards = self._core.all_link_args()
        await self._transport.open(channels, patterns, shards)
        await self._confirm(len(channels) + len(patterns) + len(shards))
        gap = self._core.on_connected(time.monotonic())
        await self._announce(True)
        if gap is not None:
            self.last_gap = gap
            message = "pub/sub link restored after %.3fs (%s)"
            coalesced(log, "restored", message, gap.duration, gap.error)
            if self._on_gap is not None:
                await acall_back(self._on_gap, gap)

    async def _confirm(self, expected: int) -> None:
        """Read pushes until ``expected`` subscriptions are confirmed; keep any data meanwhile."""
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while expected > 0:
            if time.monotonic() >= deadline:
                raise BackendUnavailableError("subscriptions were not confirmed in time")
            raw = await self._transport.read(self._core.read_slice())
            if raw is None:
                continue
            kind = raw.get("type")
            if kind in ("subscribe", "psubscribe", "ssubscribe"):
                expected -= 1
            else:
                message = self._core.on_push(raw, time.monotonic())
                if message is not None:
                    self._backlog.append(message)

    async def _reconnect(self, deadline: float | None) -> None:
        delay = self._core.retry_wait(time.monotonic())
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        if delay > 0:
            await self._transport.sleep(delay)
        # Only the backoff holds an attempt back, never the caller's deadline: a reader polling
        # with timeouts shorter than the backoff must still reconnect.
        if self._closed or self._core.retry_wait(time.monotonic()) > 0:
            return
        try:
            async with self._transport.read_lock:  # not during the backoff above
                await self._connect()
        except BackendError as exc:
            await self._lost(exc)

    async def _read_once(self, deadline: float | None) -> Message | None:
        core = self._core
        try:
            await self._apply_changes()
            now = time.monotonic()
            if core.ping_due(now):
                await self._transport.ping()
                core.on_ping(now)
            wait = core.read_slice()
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - now))
            raw = await self._transport.read(wait)
        except BackendError as exc:
            await self._drop(exc)
            return None
        now = time.monotonic()
        if raw is not None:
            ended = core.ended_by_server(raw)
            if ended is not None:
                await self._drop(BackendUnavailableError(ended))
                return None
            return core.on_push(raw, now)
        if core.is_dead(now):
            await self._drop(BackendUnavailableError("no reply to PING: the link is half-open"))
        return None

    async def _drop(self, error: BaseException) -> None:
        coalesced(log, ("lost", type(error)), "pub/sub link lost: %s", error)
        await self._lost(error)

    async def _change(self, add: bool, channels: set[bytes], patterns: set[bytes]) -> None:
        if not (channels or patterns):
            return
        self._changes.append((add, channels, patterns))
        if not self._reading:
            # A reader that starts meanwhile waits for this confirmation (its reads and ours
            # on one link would break it); one that was reading applies the change itself.
            async with self._transport.read_lock:
                try:
                    await self._apply_changes()
                except BackendError as exc:
                    await self._drop(exc)  # the next read reconnects with every subscription

    async def _apply_changes(self) -> None:
        if not self._core.connected:
            self._changes.clear()  # reconnecting subscribes to the current sets anyway
            return
        while self._changes:
            add, channels, patterns = self._changes.pop(0)
            args = self._core.link_args(channels, patterns)
            if add:
                await self._transport.subscribe(*args)
                if not self._reading:
                    await self._confirm(len(channels) + len(patterns))
            else:
                await self._transport.unsubscribe(*args)
