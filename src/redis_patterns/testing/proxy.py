"""`FaultProxy`: a loopback TCP proxy that delays, blackholes, resets or drops replies on demand.

Put it between a client and a real server (``connect(proxy.url)``) and switch its mode while the
test runs:

- `pass_through` forwards everything (the initial mode);
- `latency` delivers every chunk late (requests and replies, each ``seconds`` + jitter);
- `blackhole` keeps connections open but forwards nothing (a half-open link: the client only
  notices through its own timeout);
- `reset` sends a TCP RST on every existing and every new connection (``SO_LINGER`` 0), or,
  with ``every=n``, answers every n-th request with one instead of forwarding it;
- `reset_connections` sends a TCP RST on every existing connection once and keeps the mode, so
  clients reconnect through the proxy at once (a one-off network blip);
- `drop_replies` forwards requests, so the server EXECUTES them, then throws the reply away and
  closes the client's connection: the "reply lost after execution" case, where the client
  cannot know whether its command ran (a seeded random share, or exactly every n-th request).

Why asyncio in one background thread: one thread serves any number of connections, latency is a
timer per chunk rather than a sleeping thread, and the proxy works the same under sync tests and
async tests (it does not share, or block, the test's own event loop; a sync client called from
an ``async def`` test would deadlock a proxy running on that loop). The thread is a daemon, is
stopped by `stop` / ``__exit__``, and by an ``atexit`` hook for proxies left running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import random
import socket
import struct
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

__all__ = ["FaultProxy", "ProxyStats"]

T = TypeVar("T")
_CHUNK = 65536
_LOOP_TIMEOUT = 10.0


class _HasPort(Protocol):
    @property
    def port(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class _Mode:
    kind: Literal["pass", "latency", "blackhole", "reset", "drop"] = "pass"
    seconds: float = 0.0
    jitter: float = 0.0
    requests: bool = True
    replies: bool = True
    probability: float = 1.0
    match: bytes | None = None
    every: int = 0  # reset/drop: only every n-th request (0: all, or by probability)


@dataclass(slots=True)
class ProxyStats:
    """What the proxy did so far (read it from the test thread; counts only grow)."""

    connections: int = 0
    """Client connections accepted."""
    forwarded_requests: int = 0
    """Chunks sent from a client to the server."""
    matched_requests: int = 0
    """Request chunks forwarded under `drop_replies` that contain its ``match`` bytes."""
    dropped_replies: int = 0
    """Replies thrown away by `drop_replies` (each closed its client connection)."""
    resets: int = 0
    """Connections answered with a TCP RST."""
    blackholed: int = 0
    """Chunks swallowed by `blackhole`."""


@dataclass(eq=False)
class _Link:
    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter | None = None
    drop_next_reply: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` in front of ``target`` whose faults switch at run time.

    Args:
        target: an `EmbeddedServer` (anything with a ``port``) or a ``(host, port)`` pair.
        seed: seeds the random choices (jitter, drop probability) so a run can be repeated.

    >>> with FaultProxy(server) as proxy:
    ...     client = redis_patterns.connect(proxy.url, socket_timeout=0.5)
    ...     proxy.drop_replies()      # the next command runs, its reply is lost
    ...     proxy.pass_through()
    """

    def __init__(self, target: _HasPort | tuple[str, int], *, seed: int | None = None) -> None:
        self._target = target
        self._mode = _Mode()
        self._random = random.Random(seed)
        self.stats = ProxyStats()
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._counted = 0  # requests counted towards the current mode's ``every``
        self.port = 0  # the listening port once started (0 before)

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the proxy (connect clients here)."""
        if not self.port:
            raise RuntimeError("the proxy has not been started")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> FaultProxy:
        """Start listening on a free loopback port (in a background thread)."""
        if self.running:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(_LOOP_TIMEOUT):
            raise RuntimeError("the proxy's event loop did not start")
        self._server = self._call(
            asyncio.start_server(self._handle, "127.0.0.1", 0, reuse_address=True)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        _live.add(self)
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and end the proxy's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_LOOP_TIMEOUT)
        self._loop = None
        self._thread = None
        _live.discard(self)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._close_link(link)
        # Every task on this loop (connection handlers, pumps, delayed senders) ends here, so
        # closing the loop destroys no pending task.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_LOOP_TIMEOUT)

    # --- modes -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The current mode: ``pass``, ``latency``, ``blackhole``, ``reset`` or ``drop``."""
        return self._mode.kind

    def pass_through(self) -> None:
        """Forward everything unchanged (connections broken by earlier faults stay broken)."""
        self._mode = _Mode()

    def latency(
        self, seconds: float, jitter: float = 0.0, *, requests: bool = True, replies: bool = True
    ) -> None:
        """Deliver every chunk ``seconds`` (+ up to ``jitter``, uniformly) late, order kept.

        Both directions are delayed by default, so a round trip takes ``2 * seconds`` longer;
        ``requests=False`` delays only the replies (the server executes at once, the client
        hears late).
        """
        if seconds < 0 or jitter < 0:
            raise ValueError("seconds and jitter must be >= 0")
        self._mode = _Mode("latency", seconds, jitter, requests, replies)

    def blackhole(self) -> None:
        """Keep every connection (and accept new ones) but forward nothing: a half-open link."""
        self._mode = _Mode("blackhole")

    def reset(self, *, every: int | None = None) -> None:
        """Send a TCP RST on every existing connection, and on each new one until switched.

        Args:
            every: instead, keep connections and answer every n-th request chunk (counted
                across all connections from this call on) with a TCP RST before it reaches the
                server: a connection reset mid-call, at a steady rate, while other calls pass.
        """
        n = _every(every)
        self._counted = 0
        self._mode = _Mode("reset", every=n)
        if self._loop is not None and not n:
            self._call(self._reset_all())

    def reset_connections(self) -> None:
        """Send a TCP RST on every existing connection once; the mode stays as it is.

        New connections are treated by the current mode (forwarded under `pass_through`), so a
        client reconnects at once: a one-off blip, unlike `reset`, which refuses reconnections
        until the mode is switched.
        """
        if self._loop is not None:
            self._call(self._reset_all())

    def drop_replies(
        self,
        probability: float = 1.0,
        *,
        match: bytes | str | None = None,
        every: int | None = None,
    ) -> None:
        """Forward requests (the server runs them) but lose the reply and close the client.

        Args:
            probability: the share of requests whose reply is lost (a seeded random draw).
            match: only requests containing these bytes (e.g. ``b"EVALSHA"``) can lose their
                reply, so connection handshakes are left alone.
            every: instead of a random draw, lose exactly the reply of every n-th (matching)
                request chunk, counted across all connections from this call on.

        Raises:
            ValueError: ``probability`` outside [0, 1], ``every`` < 1, or both given.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        n = _every(every)
        if n and probability != 1.0:
            raise ValueError("give either probability or every, not both")
        needle = match.encode() if isinstance(match, str) else match
        self._counted = 0
        self._mode = _Mode("drop", probability=probability, match=needle, every=n)

    def _nth(self, every: int) -> bool:
        """Count one request towards ``every``; true on every n-th."""
        self._counted += 1
        return self._counted % every == 0

    async def _reset_all(self) -> None:
        for link in list(self._links):
            self._rst(link)

    # --- the proxying ----------------------------------------------------------------------

    def _target_address(self) -> tuple[str, int]:
        if isinstance(self._target, tuple):
            return self._target
        port = self._target.port
        if port is None:
            raise RuntimeError("the proxy's target server is not running")
        return ("127.0.0.1", port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        link = _Link(writer)
        if self._mode.kind == "reset" and not self._mode.every:
            self._rst(link)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target_address())
        except OSError:
            self._rst(link)
            return
        link.upstream_writer = up_writer
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(link, reader, up_writer, upstream=True)),
            asyncio.ensure_future(self._pump(link, up_reader, writer, upstream=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._close_link(link)
        self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction; chunks wait in a queue so latency does not serialize them."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send_later(queue, writer))
        last_due = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                mode = self._mode
                if mode.kind == "reset" and (
                    not mode.every or (upstream and self._nth(mode.every))
                ):
                    self._rst(link)  # with ``every``, this request never reaches the server
                    break
                if mode.kind == "blackhole":
                    self.stats.blackholed += 1
                    continue
                if not upstream and link.drop_next_reply:
                    # The server executed the request: lose its reply and hang up on the client.
                    self.stats.dropped_replies += 1
                    self._close_link(link)
                    break
                if upstream:
                    self.stats.forwarded_requests += 1
                    if mode.kind == "drop" and (mode.match is None or mode.match in data):
                        self.stats.matched_requests += 1
                        if (
                            self._nth(mode.every)
                            if mode.every
                            else self._random.random() < mode.probability
                        ):
                            link.drop_next_reply = True
                delay = 0.0
                if mode.kind == "latency" and (mode.requests if upstream else mode.replies):
                    delay = mode.seconds + self._random.uniform(0.0, mode.jitter)
                last_due = max(last_due, loop.time() + delay)  # jitter never reorders bytes
                queue.put_nowait((last_due, data))
        finally:
            queue.put_nowait(None)
            await asyncio.gather(sender, return_exceptions=True)
            self._close_link(link)

    async def _send_later(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if writer.is_closing():
                continue
            writer.write(data)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()

    def _close_link(self, link: _Link) -> None:
        for writer in (link.client_writer, link.upstream_writer):
            if writer is not None and not writer.is_closing():
                writer.close()

    def _rst(self, link: _Link) -> None:
        self.stats.resets += 1
        sock = link.client_writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        link.client_writer.transport.abort()  # no FIN handshake: with linger 0 this is a RST
        if link.upstream_writer is not None and not link.upstream_writer.is_closing():
            link.upstream_writer.close()

    def __repr__(self) -> str:
        where = self.url if self.port else "not started"
        return f"<FaultProxy {where} -> {self._target_address()} mode={self.mode}>"


def _every(every: int | None) -> int:
    if every is None:
        return 0
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError("every must be an int >= 1")
    return every


_live: weakref.WeakSet[FaultProxy] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for proxy in list(_live):
        with contextlib.suppress(Exception):
            proxy.stop()
