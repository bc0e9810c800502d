"""StreamQueue's logic as plans: enqueue, the consumer group, pending entries, info, replay, reap.

The pattern's other parts: ``streams_entries`` (messages, records and their decoding),
``streams_dead`` (the dead-letter plans, a base of `QueueCore`) and ``streams_worker`` (the
worker's read / handle / settle loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import _metrics
from .._errors import BackendError, ConfigurationError
from .._keys import check_name, make_key
from .._plan import Command, Plan
from .._script import package_script
from .._validate import check_int, duration_ms
from .streams_dead import DeadLetterPlans
from .streams_entries import (
    ConsumerInfo,
    DeadLetter,
    PendingEntry,
    PendingSummary,
    ReplayResult,
    StreamInfo,
    StreamMessage,
    WorkerStats,
    decode_message,
    encode_payload,
    entries,
    pending_entry,
    pending_summary,
    queue_plan,
    text,
)

__all__ = [
    "ConsumerInfo",
    "DeadLetter",
    "PendingEntry",
    "PendingSummary",
    "QueueCore",
    "ReplayResult",
    "StreamInfo",
    "StreamMessage",
    "WorkerStats",
    "check_replay_args",
]


class QueueCore(DeadLetterPlans):
    """State and plans shared by `StreamQueue` and `AsyncStreamQueue`.

    Every plan that touches the queue's keys raises `QueueError` (also the `BackendError` it
    used to be) when one of them holds another type (`queue_plan`).
    """

    __slots__ = (
        "dead_key",
        "dedupe_ttl_ms",
        "errors_key",
        "group",
        "key",
        "labels",
        "max_len",
        "name",
    )

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
        # the metrics' labels: (queue, group)
        self.labels = (self.name.decode(errors="replace"), self.group.decode(errors="replace"))

    @queue_plan
    def add(self, payload: Mapping[str, Any], idempotency_key: object = None) -> Plan[str]:
        flat = encode_payload(payload)
        keys = [self.key]
        if idempotency_key is not None:
            keys.append(self.key + b":dedupe:" + check_name(idempotency_key, "idempotency_key"))
        reply = yield package_script("streams_add").eval(
            keys, (self.group, self.max_len or 0, self.dedupe_ttl_ms, *flat)
        )
        if _metrics.on:
            added = "added" if int(reply[1]) == 1 else "duplicate"
            _metrics.STREAM_ADDS.record((self.labels[0], added))
        return text(reply[0])

    @queue_plan
    def ensure_group(self) -> Plan[bool]:
        """Create the group at id 0 (the whole retained stream) if missing; True if created."""
        try:
            yield Command(("XGROUP", "CREATE", self.key, self.group, "0", "MKSTREAM"))
        except BackendError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    @queue_plan
    def pending(self) -> Plan[PendingSummary]:
        try:
            reply = yield Command(("XPENDING", self.key, self.group))
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return PendingSummary(0, None, None, {})
            raise
        return pending_summary(reply)

    @queue_plan
    def info(self) -> Plan[StreamInfo]:
        reply = yield package_script("streams_info").eval((self.key, self.dead_key), (self.group,))
        length, dead, exists, pending, lag, last_id, oldest, now_ms, flat = reply
        consumers = tuple(
            ConsumerInfo(text(flat[i]), int(flat[i + 1]), int(flat[i + 2]) / 1000)
            for i in range(0, len(flat) - 2, 3)
        )
        oldest_text = text(oldest)
        age = None
        if oldest_text:
            age = max(0, int(now_ms) - int(oldest_text.split("-")[0])) / 1000
        last = text(last_id)
        if _metrics.on:
            if int(lag) >= 0:
                _metrics.STREAM_LAG.record(self.labels, int(lag))
            _metrics.STREAM_PENDING.record(self.labels, int(pending))
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

    @queue_plan
    def replay_page(
        self, start: object, end: object, page: object
    ) -> Plan[tuple[list[StreamMessage], str | None]]:
        """One page of `replay`: the entries from ``start`` (inclusive) to ``end``, and where
        the next page starts (``None``: this page was the last)."""
        first, last, size = check_replay_args(start, end, page)
        reply = yield Command(("XRANGE", self.key, first, last, "COUNT", size))
        messages = [decode_message(i, f, 0) for i, f in entries(reply)]
        # ``(id`` is XRANGE's exclusive start (Redis 6.2)
        return messages, "(" + messages[-1].id if len(messages) == size else None

    @queue_plan
    def pending_entries(self, count: int, consumer: object = None) -> Plan[list[PendingEntry]]:
        check_int(count, "count", minimum=1)
        args: tuple[Any, ...] = (self.group, count)
        if consumer is not None:
            args += (check_name(consumer, "consumer"),)
        try:
            reply = yield package_script("streams_pending").eval((self.key,), args)
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [pending_entry(item) for item in reply or []]

    def reap(self, min_idle: object, limit: int = 0) -> Plan[list[str]]:
        idle_ms = duration_ms(min_idle, "min_idle", allow_zero=True)
        return (yield from self.reap_ms(idle_ms, limit))

    @queue_plan
    def reap_ms(self, idle_ms: int, limit: int) -> Plan[list[str]]:
        script = package_script("streams_reap")
        try:
            reply = yield script.eval((self.key,), (self.group, idle_ms, limit))
        except BackendError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [text(name) for name in reply]

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
