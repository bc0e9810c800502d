"""Worker's logic as plans: claim or read a batch, hand each entry to the handler, settle it."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _metrics
from .._errors import BackendError, BackendTimeoutError, ConfigurationError
from .._keys import check_name
from .._logging import coalesced, error_kind
from .._plan import Call, Command, Now, Plan
from .._script import package_script
from .._validate import check_callable, check_int, duration_ms
from .reconnect import TRANSIENT, reconnect_backoff
from .streams import QueueCore
from .streams_entries import (
    MAX_BATCH,
    StreamMessage,
    WorkerStats,
    decode_message,
    queue_plan,
    read_section,
)
from .streams_entries import text as _text

__all__ = ["WorkerCore", "stop_on_signals"]

log = logging.getLogger("redis_patterns.streams")

_MAX_ERROR_CHARS = 2000
# A worker reaps idle consumers at most this often, and at most this many per call.
MAX_REAP_EVERY_MS = 60_000
REAP_LIMIT = 100
# The handler of a core built only for the plans that call none (fetch, settle: unit tests).
_NO_HANDLER: Any = object()


class _HasStop(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Counters:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    released: int = 0
    reaped: int = 0
    deleted_ids: list[str] = field(default_factory=list)

    def snapshot(self) -> WorkerStats:
        return WorkerStats(
            handled=self.handled,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            claimed=self.claimed,
            released=self.released,
            deleted=len(self.deleted_ids),
            deleted_ids=tuple(self.deleted_ids),
            reaped=self.reaped,
        )


class WorkerCore:
    """The read / handle / settle cycle shared by `Worker` and `AsyncWorker`.

    Each cycle: every ``claim_every`` seconds (and while a claim scan is unfinished) reclaim
    entries idle longer than ``claim_idle`` (one script: XAUTOCLAIM, delivery counts,
    dead-lettering of entries delivered too often, acknowledgement of deleted ones); otherwise
    ``XREADGROUP ... BLOCK`` for new entries. The handler runs on each entry of the batch (a
    `Call` effect: the async runner awaits what it returns), then one script settles the
    batch: acknowledges successes, records or dead-letters failures, releases what was not
    handled. `run` repeats cycles until ``stopping``, riding out a server that is away.
    """

    def __init__(
        self,
        queue: QueueCore,
        consumer: str | bytes,
        *,
        handler: Callable[[StreamMessage], Any] = _NO_HANDLER,
        asynchronous: bool = False,
        batch: int,
        block: float,
        claim_idle: float,
        max_deliveries: int,
        read_timeout: float | None = None,
        reap_idle: object = None,
    ) -> None:
        self.queue = queue
        self.consumer = check_name(consumer, "consumer")
        if handler is not _NO_HANDLER:
            # a sync worker would call a coroutine function and never await what it returns
            check_callable(handler, "handler", async_twin=None if asynchronous else "AsyncWorker")
        self.handler = handler
        self.batch = check_int(batch, "batch", minimum=1)
        if batch > MAX_BATCH:
            raise ConfigurationError(f"batch must be <= {MAX_BATCH}, got {batch}")
        self.claim_idle_ms = duration_ms(claim_idle, "claim_idle")
        block_ms = duration_ms(block, "block")
        # Claim at least twice per claim_idle; a blocking read must not hold the loop longer.
        self.claim_every_ms = max(self.claim_idle_ms // 2, 1)
        self.block_ms = min(block_ms, self.claim_every_ms)
        if read_timeout is not None:
            # The client's socket_timeout (redis-py 8 defaults to 5 s) must outlast the blocking
            # read, or every idle read ends in a timeout, a warning and a reconnect.
            self.block_ms = max(1, min(self.block_ms, int(read_timeout * 1000 * 0.8)))
        self.max_deliveries = check_int(max_deliveries, "max_deliveries", minimum=1)
        self.reap_idle_ms: int | None = None
        if reap_idle is not None:
            # Never below 2 x claim_idle: a consumer that quiet is surely not reading (reads
            # touch it every block <= claim_idle / 2 s) and its entries could be reclaimed.
            self.reap_idle_ms = max(duration_ms(reap_idle, "reap_idle"), 2 * self.claim_idle_ms)
        self.reap_every_ms = min((self.reap_idle_ms or 0) // 2, MAX_REAP_EVERY_MS)
        self.counters = _Counters()
        # set by stop(), maybe from a signal handler or another thread; read between entries
        self.stopping = False
        self.running = False
        self._cursor = "0-0"
        self._last_claim: float | None = None
        self._last_reap: float | None = None
        self._group_ready = False

    @property
    def key(self) -> bytes:
        """The queue's stream key."""
        return self.queue.key

    @property
    def name(self) -> str:
        """The consumer's name, as text."""
        return _text(self.consumer)

    @property
    def block_seconds(self) -> float:
        return self.block_ms / 1000

    @queue_plan
    def run(self) -> Plan[WorkerStats]:
        """Run cycles until ``stopping``, then leave the group; connection failures are retried
        with backoff (0.05 s doubling to 2 s). Returns the stats."""
        if self.running:
            raise ConfigurationError(f"worker {self.name!r} is already running")
        self.running = True
        attempt = 0
        try:
            while not self.stopping:
                try:
                    yield from self.cycle()
                    attempt = 0
                except TRANSIENT as exc:
                    coalesced(log, ("retry", self.consumer, error_kind(exc)),
                              "worker %r: %s; retrying", self.name, exc)  # fmt: skip
                    yield from reconnect_backoff(attempt)
                    attempt += 1
            try:
                yield from self.leave()
            except TRANSIENT as exc:
                # Our pending entries (if any) stay in the group and will be reclaimed.
                log.warning("worker %r could not leave the group: %s", self.name, exc)
        finally:
            self.running = False
        return self.counters.snapshot()

    @queue_plan
    def cycle(self) -> Plan[int]:
        """Fetch a batch, hand each entry to the handler, settle it; returns entries handled OK.

        Once ``stopping``, the current entry finishes and the rest of the batch is released.
        """
        if self.handler is _NO_HANDLER:
            raise ConfigurationError("this WorkerCore was built without a handler")
        messages = yield from self.fetch()
        handled: list[StreamMessage] = []
        failed: list[tuple[StreamMessage, BaseException]] = []
        unhandled: list[StreamMessage] = []
        for index, message in enumerate(messages):
            if self.stopping:
                unhandled = messages[index:]
                break
            try:
                yield Call(self.handler, (message,))
            except Exception as exc:
                coalesced(log, ("handler", self.consumer, type(exc)),
                          "handler failed on %s (delivery %d): %r", message.id,
                          message.deliveries, exc)  # fmt: skip
                failed.append((message, exc))
            else:
                handled.append(message)
        yield from self.settle(handled, failed, unhandled)
        return len(handled)

    def start(self) -> Plan[None]:
        yield from self.queue.ensure_group()
        self._group_ready = True

    def fetch(self) -> Plan[list[StreamMessage]]:
        """Reclaim stalled entries when due, else read new ones (blocking up to ``block``)."""
        if not self._group_ready:
            yield from self.start()
        now: float = yield Now()
        messages: list[StreamMessage] = []
        due = self._last_claim is None or (now - self._last_claim) * 1000 >= self.claim_every_ms
        if self._cursor != "0-0" or due:
            self._last_claim = now
            messages = yield from self._guard(self.claim())
        if messages:
            return messages
        yield from self._reap_when_due(now)
        try:
            reply = yield Command(
                (
                    "XREADGROUP", "GROUP", self.queue.group, self.consumer,
                    "COUNT", self.batch, "BLOCK", self.block_ms,
                    "STREAMS", self.queue.key, ">",
                )
            )  # fmt: skip
        except BackendTimeoutError:
            # The client's socket_timeout is shorter than block, or the server stalled: anything
            # delivered meanwhile is pending to us and will be reclaimed after claim_idle.
            coalesced(log, ("read-timeout", self.queue.key),
                      "XREADGROUP on %r timed out; entries it delivered will be reclaimed",
                      self.queue.key)  # fmt: skip
            return []
        except BackendError as exc:
            if "NOGROUP" not in str(exc):
                raise
            yield from self.start()
            return []
        return [decode_message(i, f, 1) for i, f in read_section(reply)]

    def _reap_when_due(self, now: float) -> Plan[None]:
        """Every ``reap_every`` s, delete up to `REAP_LIMIT` consumers idle past ``reap_idle``.

        Only consumers holding no pending entry go (checked in the script), so a SIGKILLed
        worker's name leaves the group once its entries were reclaimed and it stayed idle.
        The first call only starts the clock: a worker starting up costs no extra command.
        """
        if self.reap_idle_ms is None:
            return
        if self._last_reap is None:
            self._last_reap = now
            return
        if (now - self._last_reap) * 1000 < self.reap_every_ms:
            return
        self._last_reap = now
        reaped = yield from self.queue.reap_ms(self.reap_idle_ms, REAP_LIMIT)
        if reaped:
            self.counters.reaped += len(reaped)
            log.info("reaped %d idle consumer(s) of %r: %s", len(reaped), self.queue.key, reaped)

    def _guard(self, plan: Plan[list[StreamMessage]]) -> Plan[list[StreamMessage]]:
        """Run ``plan``; if the group (or the stream) vanished, recreate it and read nothing."""
        try:
            return (yield from plan)
        except BackendError as exc:
            if "NOGROUP" not in str(exc):
                raise
            yield from self.start()
            return []

    def claim(self) -> Plan[list[StreamMessage]]:
        """One XAUTOCLAIM step (see ``lua/streams_claim.lua``)."""
        q = self.queue
        reply = yield package_script("streams_claim").eval(
            (q.key, q.dead_key, q.errors_key),
            (q.group, self.consumer, self.claim_idle_ms, self._cursor, self.batch,
             self.max_deliveries),
        )  # fmt: skip
        cursor, claimed, deleted, dead = reply
        self._cursor = _text(cursor)
        messages = [
            decode_message(_text(entry_id), fields, int(deliveries))
            for entry_id, deliveries, fields in claimed
        ]
        self.counters.claimed += len(messages)
        self.counters.dead_lettered += len(dead)
        if dead and _metrics.on:
            _metrics.STREAM_DEAD_LETTERED.record(q.labels, len(dead))
        if deleted:
            ids = [_text(i) for i in deleted]
            self.counters.deleted_ids.extend(ids)
            coalesced(
                log, ("deleted", q.key),
                "%d pending entries of %r were deleted from the stream before being "
                "acknowledged (trimmed by MAXLEN?); acknowledged without handling: %s",
                len(ids), q.key, ids[:10],
            )  # fmt: skip
        return messages

    def settle(
        self,
        handled: Sequence[StreamMessage],
        failed: Sequence[tuple[StreamMessage, BaseException]],
        unhandled: Sequence[StreamMessage],
        *,
        leave: bool = False,
    ) -> Plan[None]:
        """Acknowledge, record failures / dead-letter, release, in one script."""
        if not (handled or failed or unhandled or leave):
            return
        q = self.queue
        args: list[Any] = [
            q.group, self.consumer, self.max_deliveries, self.claim_idle_ms,
            len(handled), len(failed), len(unhandled), 1 if leave else 0,
        ]  # fmt: skip
        args += [m.id for m in handled]
        for message, exc in failed:
            args += [message.id, message.deliveries, describe_error(exc)]
        for message in unhandled:
            args += [message.id, message.deliveries]
        reply = yield package_script("streams_settle").eval((q.key, q.dead_key, q.errors_key), args)
        _acked, dead, released, _left = (int(x) for x in reply)
        self.counters.handled += len(handled)
        self.counters.failed += len(failed)
        self.counters.dead_lettered += dead
        if _metrics.on:
            if handled:
                _metrics.STREAM_HANDLED.record(q.labels, len(handled))
            if failed:
                _metrics.STREAM_FAILED.record(q.labels, len(failed))
            if dead:
                _metrics.STREAM_DEAD_LETTERED.record(q.labels, dead)
        self.counters.released += released

    def leave(self) -> Plan[None]:
        """Delete this consumer from the group if it holds nothing (it never loses entries)."""
        yield from self.settle((), (), (), leave=True)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__qualname__}: {exc}"
    return text[:_MAX_ERROR_CHARS]


def stop_on_signals(
    *workers: _HasStop, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)
) -> Callable[[], None]:
    """Make SIGTERM / SIGINT stop ``workers`` gracefully (their ``run()`` then returns).

    Call it from the main thread of the worker process. Each worker finishes the message it is
    handling, releases the rest of its batch to the group and leaves it. Previous handlers are
    chained (called after the workers are told to stop) unless they are the defaults that would
    kill the process. Returns a function that restores the previous handlers.

    Raises:
        ConfigurationError: no worker given.
    """
    if not workers:
        raise ConfigurationError("stop_on_signals needs at least one worker")
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        for worker in workers:
            worker.stop()
        before = previous.get(signum)
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)

    for signum in signals:
        previous[signum] = signal.signal(signum, handle)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
