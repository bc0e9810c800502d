"""StreamQueue and Worker logic: enqueue, read, claim, settle and dead-letter, as plans."""

from __future__ import annotations

import inspect
import logging
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .._errors import BackendError, BackendTimeoutError, ConfigurationError
from .._keys import check_name, make_key
from .._logging import coalesced
from .._plan import Command, Now, Plan
from .._script import package_script
from .._validate import check_int, duration_ms

__all__ = [
    "ConsumerInfo",
    "DeadLetter",
    "PendingEntry",
    "PendingSummary",
    "QueueCore",
    "ReplayResult",
    "StreamInfo",
    "StreamMessage",
    "WorkerCore",
    "WorkerStats",
    "acall_handler",
    "acheck_handler",
    "call_handler",
    "check_handler",
    "stop_on_signals",
]

log = logging.getLogger("redis_patterns.streams")

MAX_BATCH = 10_000
_DEAD_META = ("id", "group", "consumer", "deliveries", "error")
_DATA_PREFIX = "data."
_MAX_ERROR_CHARS = 2000
# Fields a replay adds to the re-added entry; payloads may not use the prefix.
_META_PREFIX = "_rp."
_REPLAYS = "_rp.replays"
_ORIGINAL_ID = "_rp.original_id"
_ENTRY_ID = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")
# A worker reaps idle consumers at most this often, and at most this many per call.
MAX_REAP_EVERY_MS = 60_000
REAP_LIMIT = 100


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One stream entry handed to a handler.

    ``data`` maps the entry's field names to their values (JSON-decoded); ``deliveries`` counts
    how many times the group has handed this entry out, this time included (0 in `replay`).
    An entry put back from the dead letters (`replay_dead_letters`) has ``replays`` >= 1 and
    ``original_id``, the id it was first added under; otherwise 0 and None.
    """

    id: str
    data: dict[str, Any]
    deliveries: int
    replays: int = 0
    original_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry set aside after ``deliveries`` failed attempts, with the last error.

    ``original_id`` is the id of the entry that failed; ``replays`` how many times this payload
    had already been replayed from the dead letters before it failed again.
    """

    id: str
    original_id: str
    data: dict[str, Any]
    error: str
    deliveries: int
    consumer: str
    group: str
    replays: int = 0


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One delivered, unacknowledged entry: who holds it, for how long, how often delivered."""

    id: str
    consumer: str
    idle: float
    deliveries: int


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What `replay_dead_letters` did.

    ``replayed`` maps each dead letter's id to the id of the entry it became on the stream;
    ``missing`` lists the requested ids that were not in the dead-letter stream (already
    replayed or purged, or never there).
    """

    replayed: dict[str, str]
    missing: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many dead letters went back onto the stream."""
        return len(self.replayed)


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """Entries delivered to the group but not acknowledged yet, per consumer."""

    count: int
    first_id: str | None
    last_id: str | None
    consumers: dict[str, int]


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of the group: how many entries it holds and how long it has been idle."""

    name: str
    pending: int
    idle: float


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A consistent snapshot of a queue (one script).

    ``lag`` is how many entries the group has not read yet (``None`` when the server cannot
    tell, e.g. after arbitrary deletions); ``oldest_pending_age`` is the age in seconds of the
    oldest unacknowledged entry, by its id's timestamp against server time.
    """

    length: int
    lag: int | None
    pending: int
    consumers: tuple[ConsumerInfo, ...]
    oldest_pending_age: float | None
    dead_letters: int
    last_delivered_id: str | None
    group_exists: bool


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What a worker did so far.

    ``deleted`` counts entries that were pending but had been trimmed or deleted from the
    stream before anyone acknowledged them: they are acknowledged and reported, never handled.
    ``reaped`` counts idle consumers (of crashed workers) this worker deleted from the group.
    """

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    released: int = 0
    deleted: int = 0
    deleted_ids: tuple[str, ...] = ()
    reaped: int = 0


# --- codec -----------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _decode_value(raw: object) -> Any:
    data = raw if isinstance(raw, bytes) else _text(raw).encode()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # Written by another producer in plain text: hand it over as text rather than fail.
        return _text(raw)


def encode_payload(payload: object) -> list[bytes]:
    """``{"field": value}`` to the flat ``[field, json(value), ...]`` list XADD takes."""
    if not isinstance(payload, Mapping):
        raise ConfigurationError(
            f"payload must be a mapping of field names to JSON values, not {type(payload).__name__}"
        )
    if not payload:
        raise ConfigurationError("payload must have at least one field")
    flat: list[bytes] = []
    for name, value in payload.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"payload field names must be non-empty str, got {name!r}")
        if name.startswith(_META_PREFIX):
            raise ConfigurationError(
                f"payload field {name!r}: names starting with {_META_PREFIX!r} are reserved "
                "for the queue's replay records"
            )
        try:
            flat += [name.encode(), orjson.dumps(value)]
        except TypeError as exc:
            raise ConfigurationError(
                f"payload field {name!r} is not JSON-serializable: {exc}"
            ) from exc
    return flat


def _pairs(fields: object) -> list[tuple[str, Any]]:
    """Field/value pairs from a flat list (script replies) or a dict (redis-py parsed replies)."""
    if isinstance(fields, Mapping):
        return [(_text(k), v) for k, v in fields.items()]
    items = list(fields) if isinstance(fields, list | tuple) else []
    return [(_text(items[i]), items[i + 1]) for i in range(0, len(items) - 1, 2)]


def decode_message(entry_id: str, fields: object, deliveries: int) -> StreamMessage:
    """A `StreamMessage` from an entry's fields, the replay record taken out of ``data``."""
    data: dict[str, Any] = {}
    replays, original = 0, None
    for name, value in _pairs(fields):
        if name == _REPLAYS:
            replays = _int_or_zero(value)
        elif name == _ORIGINAL_ID:
            original = _text(value) or None
        else:
            data[name] = _decode_value(value)
    return StreamMessage(entry_id, data, deliveries, replays, original)


def _int_or_zero(value: object) -> int:
    try:
        return int(_text(value))
    except ValueError:
        return 0


def _entries(reply: object) -> list[tuple[str, object]]:
    """``[(id, fields), ...]`` from an XRANGE / XREADGROUP stream section."""
    out: list[tuple[str, object]] = []
    for entry in reply or []:  # type: ignore[attr-defined]
        if entry is None or entry[1] is None:
            continue
        out.append((_text(entry[0]), entry[1]))
    return out


def _read_section(reply: object) -> list[tuple[str, object]]:
    """The entries of the only stream in an XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        sections: list[Any] = list(reply.values())
        return _entries(sections[0][0] if sections and _nested(sections[0]) else sections[0])
    first = reply[0]  # type: ignore[index]
    return _entries(first[1])


def _nested(value: Any) -> bool:
    # RESP3 via redis-py: {stream: [[(id, fields), ...]]}
    return (
        bool(value)
        and isinstance(value[0], list)
        and bool(value[0])
        and isinstance(value[0][0], list | tuple)
    )


# --- the queue -------------------------------------------------------------------------------


class QueueCore:
    """State and plans shared by `StreamQueue` and `AsyncStreamQueue`."""

    __slots__ = ("dead_key", "dedupe_ttl_ms", "errors_key", "group", "key", "max_len", "name")

    def __init__(
        self,
        name: str | bytes,
        group: str | bytes,
        max_len: int | None,
        dedupe_ttl: object = 86400.0,
    ) -> None:
        self.name = check_name(name, "name")
        self.group = check_name(group, "group")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1)
        self.max_len = max_len
        self.dedupe_ttl_ms = duration_ms(dedupe_ttl, "dedupe_ttl")
        self.key = make_key("stream", self.name)
        self.dead_key = make_key("stream", self.name, "dead")
        self.errors_key = make_key("stream", self.name, "errors")

    def add(self, payload: Mapping[str, Any], idempotency_key: object = None) -> Plan[str]:
        flat = encode_payload(payload)
        keys = [self.key]
        if idempotency_key is not None:
            keys.append(self.key + b":dedupe:" + check_name(idempotency_key, "idempotency_key"))
        reply = yield package_script("stream_add").eval(
            keys, (self.group, self.max_len or 0, self.dedupe_ttl_ms, *flat)
        )
        return _text(reply[0])

    def ensure_group(self) -> Plan[bool]:
        """Create the group at id 0 (the whole retained stream) if missing; True if created."""
        try:
            yield Command(("XGROUP", "CREATE", self.key, self.group, "0", "MKSTREAM"))
        except BackendError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    def pending(self) -> Plan[PendingSummary]:
        try:
            reply = yield Command(("XPENDING", self.key, self.group))
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return PendingSummary(0, None, None, {})
            raise
        return _pending_summary(reply)

    def info(self) -> Plan[StreamInfo]:
        reply = yield package_script("stream_info").eval((self.key, self.dead_key), (self.group,))
        length, dead, exists, pending, lag, last_id, oldest, now_ms, flat = reply
        consumers = tuple(
            ConsumerInfo(_text(flat[i]), int(flat[i + 1]), int(flat[i + 2]) / 1000)
            for i in range(0, len(flat) - 2, 3)
        )
        oldest_text = _text(oldest)
        age = None
        if oldest_text:
            age = max(0, int(now_ms) - int(oldest_text.split("-")[0])) / 1000
        last = _text(last_id)
        return StreamInfo(
            length=int(length),
            lag=None if int(lag) < 0 else int(lag),
            pending=int(pending),
            consumers=consumers,
            oldest_pending_age=age,
            dead_letters=int(dead),
            last_delivered_id=last or None,
            group_exists=bool(int(exists)),
        )

    def dead_letters(self, count: int) -> Plan[list[DeadLetter]]:
        check_int(count, "count", minimum=1)
        reply = yield Command(("XRANGE", self.dead_key, "-", "+", "COUNT", count))
        return [_dead_letter(entry_id, fields) for entry_id, fields in _entries(reply)]

    def replay_page(self, start: str, end: str, count: int) -> Plan[list[StreamMessage]]:
        """One page of `replay`: entries from ``start`` (inclusive) to ``end``."""
        reply = yield Command(("XRANGE", self.key, start, end, "COUNT", count))
        return [decode_message(i, f, 0) for i, f in _entries(reply)]

    def pending_entries(self, count: int, consumer: object = None) -> Plan[list[PendingEntry]]:
        check_int(count, "count", minimum=1)
        args: tuple[Any, ...] = (self.group, count)
        if consumer is not None:
            args += (check_name(consumer, "consumer"),)
        try:
            reply = yield package_script("stream_pending").eval((self.key,), args)
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [_pending_entry(item) for item in reply or []]

    def replay_dead_letters(self, ids: object, count: object, batch: object) -> Plan[ReplayResult]:
        """Put dead letters back onto the stream: one script per ``batch`` letters."""
        size = check_int(batch, "batch", minimum=1)
        if size > MAX_BATCH:
            raise ConfigurationError(f"batch must be <= {MAX_BATCH}, got {batch}")
        script = package_script("stream_replay")
        keys = (self.key, self.dead_key)
        head = (self.group, self.max_len or 0)
        replayed: dict[str, str] = {}
        missing: list[str] = []
        if ids is not None:
            if count is not None:
                raise ConfigurationError("give ids or count, not both")
            wanted = check_entry_ids(ids, "ids")
            for i in range(0, len(wanted), size):
                reply = yield script.eval(keys, (*head, "ids", 0, *wanted[i : i + size]))
                replayed.update(_id_pairs(reply[1]))
                missing += [_text(m) for m in reply[2]]
            return ReplayResult(replayed, tuple(missing))
        remaining = None if count is None else check_int(count, "count", minimum=1)
        last = "+"
        while remaining is None or remaining > 0:
            step = size if remaining is None else min(size, remaining)
            reply = yield script.eval(keys, (*head, "oldest", step, last))
            last = _text(reply[0])
            done = _id_pairs(reply[1])
            replayed.update(done)
            if remaining is not None:
                remaining -= len(done)
            if not last or len(done) < step or last in done:
                break  # nothing left up to the bound: no empty round trip at the end
        return ReplayResult(replayed)

    def purge_dead_letters(self, ids: object, batch: object) -> Plan[int]:
        """Delete dead letters: all of them (one ``XTRIM``) or the listed ids (``XDEL``s)."""
        size = check_int(batch, "batch", minimum=1)
        if ids is None:
            return int((yield Command(("XTRIM", self.dead_key, "MAXLEN", 0))))
        wanted = check_entry_ids(ids, "ids")
        deleted = 0
        for i in range(0, len(wanted), size):
            deleted += int((yield Command(("XDEL", self.dead_key, *wanted[i : i + size]))))
        return deleted

    def reap(self, min_idle: object, limit: int = 0) -> Plan[list[str]]:
        idle_ms = duration_ms(min_idle, "min_idle", allow_zero=True)
        return (yield from self.reap_ms(idle_ms, limit))

    def reap_ms(self, idle_ms: int, limit: int) -> Plan[list[str]]:
        script = package_script("stream_reap")
        try:
            reply = yield script.eval((self.key,), (self.group, idle_ms, limit))
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [_text(name) for name in reply]

    def delete(self) -> Plan[int]:
        """Remove the stream, its dead letters and its error notes."""
        reply = yield Command(("DEL", self.key, self.dead_key, self.errors_key))
        return int(reply)


def check_replay_args(start: object, end: object, page: object) -> tuple[str, str, int]:
    for what, value in (("start", start), ("end", end)):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{what} must be a non-empty stream id string, got {value!r}")
    check_int(page, "page", minimum=1)
    return str(start), str(end), int(page)  # type: ignore[call-overload]


def check_entry_ids(ids: object, what: str) -> list[str]:
    """A list of stream entry ids (``"<ms>-<seq>"``), refusing a lone string or a bad id."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise ConfigurationError(f"{what} must be a list of entry ids, not {type(ids).__name__}")
    out: list[str] = []
    for entry_id in ids:
        if not isinstance(entry_id, str) or not _ENTRY_ID.match(entry_id):
            raise ConfigurationError(
                f"{what}: {entry_id!r} is not a stream entry id like '1700000000000-0'"
            )
        out.append(entry_id)
    return out


def _id_pairs(flat: Any) -> dict[str, str]:
    items = list(flat or [])
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _pending_entry(item: Any) -> PendingEntry:
    entry_id, consumer, idle_ms, deliveries = item
    return PendingEntry(_text(entry_id), _text(consumer), int(idle_ms) / 1000, int(deliveries))


def next_start(last_id: str) -> str:
    """The exclusive start after ``last_id`` for XRANGE (``(id`` needs Redis 6.2)."""
    return "(" + last_id


def _pending_summary(reply: Any) -> PendingSummary:
    if isinstance(reply, Mapping):  # redis-py parses XPENDING into a dict
        consumers = {_text(c["name"]): int(c["pending"]) for c in reply.get("consumers") or []}
        first, last = reply.get("min"), reply.get("max")
        return PendingSummary(
            int(reply.get("pending") or 0),
            None if first is None else _text(first),
            None if last is None else _text(last),
            consumers,
        )
    count, first, last, per_consumer = reply
    return PendingSummary(
        int(count),
        None if first is None else _text(first),
        None if last is None else _text(last),
        {_text(name): int(n) for name, n in per_consumer or []},
    )


def _dead_letter(entry_id: str, fields: object) -> DeadLetter:
    meta: dict[str, str] = {}
    data: dict[str, Any] = {}
    replays = 0
    for name, value in _pairs(fields):
        if name == _DATA_PREFIX + _REPLAYS:
            replays = _int_or_zero(value)
        elif name == _DATA_PREFIX + _ORIGINAL_ID:
            pass  # the entry's own id (``original_id`` below) is what failed
        elif name.startswith(_DATA_PREFIX):
            data[name[len(_DATA_PREFIX) :]] = _decode_value(value)
        elif name in _DEAD_META:
            meta[name] = _text(value)
    return DeadLetter(
        id=entry_id,
        original_id=meta.get("id", ""),
        data=data,
        error=meta.get("error", ""),
        deliveries=int(meta.get("deliveries", "0") or 0),
        consumer=meta.get("consumer", ""),
        group=meta.get("group", ""),
        replays=replays,
    )


# --- the worker ------------------------------------------------------------------------------


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


def check_handler(handler: object) -> None:
    """A sync worker's handler: callable, and not a coroutine function."""
    acheck_handler(handler)
    if inspect.iscoroutinefunction(handler):
        raise ConfigurationError(
            "handler is a coroutine function: use AsyncWorker with an asyncio client"
        )


def acheck_handler(handler: object) -> None:
    """An async worker's handler: any callable (its result is awaited when awaitable)."""
    if not callable(handler):
        raise ConfigurationError(f"handler must be callable, got {type(handler).__name__}")


def call_handler(handler: Callable[[StreamMessage], object], message: StreamMessage) -> None:
    """Call a sync worker's handler."""
    handler(message)


async def acall_handler(
    handler: Callable[[StreamMessage], Awaitable[object] | object], message: StreamMessage
) -> None:
    """Call an async (or plain) handler from `AsyncWorker`."""
    result = handler(message)
    if inspect.isawaitable(result):
        await result


class WorkerCore:
    """The read / claim / settle cycle shared by `Worker` and `AsyncWorker`.

    Each cycle: every ``claim_every`` seconds (and while a claim scan is unfinished) reclaim
    entries idle longer than ``claim_idle`` (one script: XAUTOCLAIM, delivery counts,
    dead-lettering of entries delivered too often, acknowledgement of deleted ones); otherwise
    ``XREADGROUP ... BLOCK`` for new entries. After the handler ran on the batch, one script
    settles it: acknowledges successes, records or dead-letters failures, releases what was
    not handled.
    """

    def __init__(
        self,
        queue: QueueCore,
        consumer: str | bytes,
        *,
        batch: int,
        block: float,
        claim_idle: float,
        max_deliveries: int,
        read_timeout: float | None = None,
        reap_idle: object = None,
    ) -> None:
        self.queue = queue
        self.consumer = check_name(consumer, "consumer")
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
        self._cursor = "0-0"
        self._last_claim: float | None = None
        self._last_reap: float | None = None
        self._group_ready = False

    @property
    def block_seconds(self) -> float:
        return self.block_ms / 1000

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
        return [decode_message(i, f, 1) for i, f in _read_section(reply)]

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
        """One XAUTOCLAIM step (see ``lua/stream_claim.lua``)."""
        q = self.queue
        reply = yield package_script("stream_claim").eval(
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
        reply = yield package_script("stream_settle").eval((q.key, q.dead_key, q.errors_key), args)
        _acked, dead, released, _left = (int(x) for x in reply)
        self.counters.handled += len(handled)
        self.counters.failed += len(failed)
        self.counters.dead_lettered += dead
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
