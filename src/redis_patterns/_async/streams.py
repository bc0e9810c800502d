"""AsyncStreamQueue and AsyncWorker: a reliable queue on Redis Streams with consumer groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._core.streams import (
    DeadLetter,
    PendingEntry,
    PendingSummary,
    QueueCore,
    ReplayResult,
    StreamInfo,
    StreamMessage,
    WorkerStats,
)
from .._core.streams_worker import WorkerCore
from .._runner import AsyncClient, AsyncRunner
from .._validate import check_instance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["AsyncStreamQueue", "AsyncWorker"]


class AsyncStreamQueue:
    """A work queue on a Redis stream, consumed by a consumer group (at-least-once delivery).

    Keys: the stream ``{stream:<name>}``, its dead letters ``{stream:<name>}:dead`` and the last
    error of entries being retried ``{stream:<name>}:errors`` (one hash tag: one cluster slot).

    A payload is a non-empty mapping of field names (str) to JSON-serializable values; each
    value is stored as its own stream field, JSON-encoded with orjson, so entries stay readable
    with ``XRANGE`` and typed on the way back.

    Args:
        client: a redis-py client of this class's flavour (standalone or cluster).
        name: the queue's name.
        group: the consumer group the workers share; created on first `add` (or when a worker
            starts) at id 0, so it sees every entry still in the stream.
        max_len: trim the stream to about this many entries on each `add` (``MAXLEN ~``);
            ``None`` keeps everything. Trimming can delete entries not handled yet: workers
            acknowledge and report them (`WorkerStats.deleted`), they cannot handle them.

    Every method raises `QueueError` when a key of the queue holds a value of another type
    (the server's ``WRONGTYPE``: another program, or a mistyped name, uses the key); it is also
    the `BackendError` (a `ScriptError` for the operations that run a script) such a refusal
    raised before, with that refusal as its ``__cause__``.

    Raises:
        ConfigurationError: an empty or invalid name or group, or ``max_len`` < 1.
    """

    def __init__(
        self,
        client: AsyncClient,
        name: str | bytes,
        group: str | bytes = "workers",
        max_len: int | None = None,
        *,
        dedupe_ttl: float = 86400.0,
    ) -> None:
        self._core = QueueCore(name, group, max_len, dedupe_ttl)
        self._runner = AsyncRunner(client)

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._core.name.decode("utf-8", "surrogateescape")

    @property
    def group(self) -> str:
        """The consumer group's name."""
        return self._core.group.decode("utf-8", "surrogateescape")

    @property
    def key(self) -> bytes:
        """The stream's key, ``{stream:<name>}``."""
        return self._core.key

    @property
    def dead_key(self) -> bytes:
        """The dead-letter stream's key, ``{stream:<name>}:dead``."""
        return self._core.dead_key

    async def add(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | bytes | None = None,
    ) -> str:
        """Append an entry (one command: a script running ``XADD``, trimming when configured).

        With ``idempotency_key``, adding again under the same key within ``dedupe_ttl`` adds
        nothing and returns the first entry's id: retry an `add` whose outcome was unknown
        (`BackendTimeoutError`) without creating a duplicate.

        Returns:
            The entry's id, e.g. ``"1700000000000-0"``.

        Raises:
            ConfigurationError: ``payload`` is empty, not a mapping, has a field name that is
                not a non-empty str, or a value that is not JSON-serializable; or an invalid
                ``idempotency_key`` (before any I/O).
            BackendTimeoutError: no reply in time; the entry may or may not have been added.
        """
        return await self._runner.run(self._core.add(payload, idempotency_key))

    async def pending(self) -> PendingSummary:
        """How many entries are delivered but unacknowledged, in total and per consumer."""
        return await self._runner.run(self._core.pending())

    async def pending_entries(
        self, count: int = 100, *, consumer: str | bytes | None = None
    ) -> list[PendingEntry]:
        """The oldest ``count`` pending entries: id, consumer, idle seconds, deliveries.

        Args:
            count: the most entries to list.
            consumer: list only this consumer's entries.

        Raises:
            ConfigurationError: ``count`` < 1 or an invalid ``consumer`` (before any I/O).
        """
        return await self._runner.run(self._core.pending_entries(count, consumer))

    async def info(self) -> StreamInfo:
        """Length, lag, pending, consumers, oldest pending age, dead letters (one script)."""
        return await self._runner.run(self._core.info())

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters, each with its original id, data and last error.

        Raises:
            ConfigurationError: ``count`` is not an int >= 1.
            QueueError: an entry of the dead-letter stream lacks what the queue records with
                each dead letter (another program added it); the message names its id, for
                `purge_dead_letters`.
        """
        return await self._runner.run(self._core.dead_letters(count))

    async def replay_dead_letters(
        self,
        ids: Iterable[str] | None = None,
        *,
        count: int | None = None,
        batch: int = 100,
    ) -> ReplayResult:
        """Put dead letters back onto the stream, to be handled again (e.g. after a fix).

        Each letter becomes a new entry with its original fields, handed out like any other
        (deliveries start over); its `StreamMessage` has ``replays`` (1 the first time it is
        replayed, 2 the next...) and ``original_id`` (the id it was first added under), and so
        does the `DeadLetter` if it fails again. Each letter is re-added and then deleted from
        the dead letters in one script, one script per ``batch`` letters: a failure can leave
        a letter in both streams (handled once more), never in neither, and replaying again
        after an unknown outcome (`BackendTimeoutError`) replays nothing twice.

        Args:
            ids: the dead letters' ids (`DeadLetter.id`) to replay; ``None`` replays the oldest
                ``count`` (all of them by default) that were dead letters when the call began,
                so letters that fail again meanwhile wait for the next call.
            count: with ``ids=None``, the most letters to replay.
            batch: letters per script (one round trip each).

        Returns:
            Which dead letters became which entries, and which ``ids`` were not found.

        Raises:
            ConfigurationError: an id that is not a stream id, ``ids`` given as one string,
                ``ids`` with ``count``, ``count`` or ``batch`` < 1 (before any I/O).
        """
        return await self._runner.run(self._core.replay_dead_letters(ids, count, batch))

    async def purge_dead_letters(
        self,
        ids: Iterable[str] | None = None,
        *,
        batch: int = 1000,
    ) -> int:
        """Delete dead letters for good: the listed ids, or all of them (``ids=None``).

        Args:
            ids: the dead letters' ids (`DeadLetter.id`); ``None`` deletes every dead letter
                (one ``XTRIM ... MAXLEN 0``).
            batch: ids per ``XDEL``.

        Returns:
            How many dead letters were deleted.

        Raises:
            ConfigurationError: an id that is not a stream id, ``ids`` given as one string, or
                ``batch`` < 1 (before any I/O).
        """
        return await self._runner.run(self._core.purge_dead_letters(ids, batch))

    async def replay(
        self, start: str = "-", end: str = "+", *, page: int = 1000
    ) -> AsyncIterator[StreamMessage]:
        """Every entry from ``start`` to ``end`` (inclusive ids), oldest first, in pages.

        For event sourcing and audits: reading does not touch the group or acknowledge anything.
        Messages carry ``deliveries=0``.

        Raises:
            ConfigurationError: an empty ``start`` / ``end`` or ``page`` < 1.
        """
        cursor = start
        while True:
            batch, following = await self._runner.run(self._core.replay_page(cursor, end, page))
            for message in batch:
                yield message
            if following is None:
                return
            cursor = following

    async def ensure_group(self) -> bool:
        """Create the consumer group (at id 0) if it does not exist; True if it was created."""
        return await self._runner.run(self._core.ensure_group())

    async def reap(self, min_idle: float = 3600.0) -> list[str]:
        """Delete consumers idle ``min_idle`` seconds or more that hold no pending entry.

        Crashed workers restarted under new names leave their old names in the group; this
        removes them. A consumer still holding entries is never deleted (that would drop its
        entries): workers reclaim those first. Checked and deleted in one script.

        Returns:
            The names of the consumers deleted.

        Raises:
            ConfigurationError: ``min_idle`` is negative or not a number of seconds.
        """
        return await self._runner.run(self._core.reap(min_idle))

    async def delete(self) -> int:
        """Delete the stream, its dead letters and its error notes; returns how many keys went."""
        return await self._runner.run(self._core.delete())


class AsyncWorker:
    """Consumes an `AsyncStreamQueue` as one named consumer of its group.

    Each cycle reads up to ``batch`` new entries (``XREADGROUP``, blocking up to ``block``
    seconds), calls ``handler`` on each and acknowledges the successful ones in one script.
    Every ``claim_idle / 2`` seconds it first reclaims entries idle longer than ``claim_idle``
    (their consumer died or failed them), so nothing stays pending forever. An entry delivered
    ``max_deliveries`` times without success goes to the dead-letter stream with its last error;
    the move and its acknowledgement are one script, so a crash cannot lose or duplicate it.
    A failed entry is retried after ``claim_idle`` (by any worker).

    Delivery is at-least-once: a worker killed after its handler ran but before the batch was
    acknowledged hands that batch again to another worker. Make handlers idempotent.

    Args:
        queue: the queue to consume.
        consumer: this worker's name in the group (unique per live worker).
        handler: called with each `StreamMessage`; raising marks the delivery failed
            (`AsyncWorker` also accepts coroutine functions and awaits them).
        batch: entries per read.
        block: the longest a read waits for new entries, in seconds (capped at
            ``claim_idle / 2``, and at 80 % of the client's ``socket_timeout`` so an idle read
            never times out; redis-py 8 defaults that timeout to 5 s). The read holds a pooled
            connection that long.
        claim_idle: seconds an entry may stay unacknowledged before another worker reclaims it;
            longer than your slowest handler, or entries are handled twice.
        max_deliveries: deliveries before an entry is dead-lettered (>= 1).
        reap_idle: delete consumers of the group idle this many seconds (at least
            ``2 * claim_idle``) that hold no pending entry: crashed workers' names (see
            `AsyncStreamQueue.reap`). Checked every ``min(reap_idle / 2, 60)`` s by one script
            that deletes at most 100 consumers; ``None`` turns it off. A live worker's consumer
            never gets that idle: its reads touch it at least every ``block`` seconds.

    Raises:
        ConfigurationError: invalid names or numbers, or a non-callable handler (before I/O).
        TypeError: ``queue`` is not an `AsyncStreamQueue` (a `ConfigurationError` too).
    """

    def __init__(
        self,
        queue: AsyncStreamQueue,
        consumer: str | bytes,
        handler: Callable[[StreamMessage], Any],
        *,
        batch: int = 10,
        block: float = 5.0,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        reap_idle: float | None = 600.0,
    ) -> None:
        check_instance(queue, AsyncStreamQueue, "queue")
        self._core = WorkerCore(
            queue._core,
            consumer,
            handler=handler,
            asynchronous=queue._runner.asynchronous,
            batch=batch,
            block=block,
            claim_idle=claim_idle,
            max_deliveries=max_deliveries,
            read_timeout=queue._runner.read_timeout,
            reap_idle=reap_idle,
        )
        self._runner = queue._runner

    @property
    def consumer(self) -> str:
        """This worker's consumer name."""
        return self._core.name

    @property
    def stats(self) -> WorkerStats:
        """Counts of what this worker handled, failed, dead-lettered, claimed and released."""
        return self._core.counters.snapshot()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called."""
        return self._core.stopping

    async def run_once(self) -> int:
        """One cycle: reclaim or read a batch, handle it, settle it. Returns entries handled OK.

        If `stop` is called while a batch is being handled, the current message finishes and
        the rest of the batch is released to the group (claimable at once by other workers).
        """
        return await self._runner.run(self._core.cycle())

    async def run(self) -> WorkerStats:
        """Consume until `stop` is called, then leave the group cleanly; returns the stats.

        Connection failures are retried with backoff (0.05 s doubling to 2 s) until `stop`.
        `run` returns within about ``block`` seconds of `stop` (plus the current handler).

        Raises:
            ConfigurationError: the worker is already running.
            QueueError: a key of the queue holds another type (see `AsyncStreamQueue`).
        """
        return await self._runner.run(self._core.run())

    def stop(self) -> None:
        """Ask `run` to return: finish the current message, release the rest, leave the group.

        Safe to call from a signal handler or another thread.
        """
        self._core.stopping = True
