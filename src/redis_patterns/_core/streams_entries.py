"""What a stream queue hands out and reports, and how stream entries and replies become it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import orjson

from .._errors import (
    BackendError,
    ConfigurationError,
    QueueError,
    QueueKeyTypeError,
    QueueScriptKeyTypeError,
    ScriptError,
)

__all__ = [
    "MAX_BATCH",
    "ConsumerInfo",
    "DeadLetter",
    "PendingEntry",
    "PendingSummary",
    "ReplayResult",
    "StreamInfo",
    "StreamMessage",
    "WorkerStats",
    "decode_message",
    "encode_payload",
    "queue_plan",
]

# The most entries one script call handles: a worker's batch, a replay's batch.
MAX_BATCH = 10_000
# Fields a replay adds to the re-added entry; payloads may not use the prefix.
META_PREFIX = "_rp."
REPLAYS = "_rp.replays"
ORIGINAL_ID = "_rp.original_id"


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


def text(value: object) -> str:
    """A reply item as str (bytes decoded losslessly)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def decode_value(raw: object) -> Any:
    """A field value: JSON-decoded, or as text when it is not JSON."""
    data = raw if isinstance(raw, bytes) else text(raw).encode()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # Written by another producer in plain text: hand it over as text rather than fail.
        return text(raw)


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
        if name.startswith(META_PREFIX):
            raise ConfigurationError(
                f"payload field {name!r}: names starting with {META_PREFIX!r} are reserved "
                "for the queue's replay records"
            )
        try:
            flat += [name.encode(), orjson.dumps(value)]
        except TypeError as exc:
            raise ConfigurationError(
                f"payload field {name!r} is not JSON-serializable: {exc}"
            ) from exc
    return flat


def pairs(fields: object) -> list[tuple[str, Any]]:
    """Field/value pairs from a flat list (script replies) or a dict (redis-py parsed replies)."""
    if isinstance(fields, Mapping):
        return [(text(k), v) for k, v in fields.items()]
    items = list(fields) if isinstance(fields, list | tuple) else []
    return [(text(items[i]), items[i + 1]) for i in range(0, len(items) - 1, 2)]


def decode_message(entry_id: str, fields: object, deliveries: int) -> StreamMessage:
    """A `StreamMessage` from an entry's fields, the replay record taken out of ``data``.

    Entries from other producers are handed over as they are (a value that is not JSON as
    text, a replay count that is not a number as 0): a worker never fails on an entry's shape,
    which would hand the same entry to every worker in turn until it is dead-lettered.
    """
    data: dict[str, Any] = {}
    replays, original = 0, None
    for name, value in pairs(fields):
        if name == REPLAYS:
            replays = int_or_zero(value)
        elif name == ORIGINAL_ID:
            original = text(value) or None
        else:
            data[name] = decode_value(value)
    return StreamMessage(entry_id, data, deliveries, replays, original)


def int_or_zero(value: object) -> int:
    try:
        return int(text(value))
    except ValueError:
        return 0


def entries(reply: object) -> list[tuple[str, object]]:
    """``[(id, fields), ...]`` from an XRANGE / XREADGROUP stream section."""
    out: list[tuple[str, object]] = []
    for entry in reply or []:  # type: ignore[attr-defined]
        if entry is None or entry[1] is None:
            continue
        out.append((text(entry[0]), entry[1]))
    return out


def read_section(reply: object) -> list[tuple[str, object]]:
    """The entries of the only stream in an XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        sections: list[Any] = list(reply.values())
        return entries(sections[0][0] if sections and _nested(sections[0]) else sections[0])
    first = reply[0]  # type: ignore[index]
    return entries(first[1])


def _nested(value: Any) -> bool:
    # RESP3 via redis-py: {stream: [[(id, fields), ...]]}
    return (
        bool(value)
        and isinstance(value[0], list)
        and bool(value[0])
        and isinstance(value[0][0], list | tuple)
    )


def pending_entry(item: Any) -> PendingEntry:
    entry_id, consumer, idle_ms, deliveries = item
    return PendingEntry(text(entry_id), text(consumer), int(idle_ms) / 1000, int(deliveries))


def pending_summary(reply: Any) -> PendingSummary:
    if isinstance(reply, Mapping):  # redis-py parses XPENDING into a dict
        consumers = {text(c["name"]): int(c["pending"]) for c in reply.get("consumers") or []}
        first, last = reply.get("min"), reply.get("max")
        return PendingSummary(
            int(reply.get("pending") or 0),
            None if first is None else text(first),
            None if last is None else text(last),
            consumers,
        )
    count, first, last, per_consumer = reply
    return PendingSummary(
        int(count),
        None if first is None else text(first),
        None if last is None else text(last),
        {text(name): int(n) for name, n in per_consumer or []},
    )


# --- keys of another type --------------------------------------------------------------------


class _Keyed(Protocol):
    @property
    def key(self) -> bytes: ...


S = TypeVar("S", bound=_Keyed)
P = ParamSpec("P")
T = TypeVar("T")


def queue_plan(
    method: Callable[Concatenate[S, P], Generator[Any, Any, T]],
) -> Callable[Concatenate[S, P], Generator[Any, Any, T]]:
    """Make a queue's plan raise `QueueError` when one of the queue's keys holds another type.

    The server says ``WRONGTYPE`` (another program, or a mistyped name, uses the key); the
    error raised is also the `BackendError` (a `ScriptError` when a script found it) that
    the server's refusal maps to, so code catching those still does, with it as ``__cause__``.
    """

    @functools.wraps(method)
    def plan(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, T]:
        try:
            return (yield from method(self, *args, **kwargs))
        except BackendError as exc:
            if isinstance(exc, QueueError) or "WRONGTYPE" not in str(exc):
                raise
            kind = QueueScriptKeyTypeError if isinstance(exc, ScriptError) else QueueKeyTypeError
            raise kind(
                f"a key of the queue {text(self.key)!r} (the stream, its ':dead' letters, its "
                f"':errors' hash or a ':dedupe:' key) holds another type of value: is another "
                f"program using it? ({exc})"
            ) from exc

    return plan
