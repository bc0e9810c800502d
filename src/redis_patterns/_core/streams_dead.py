"""A stream queue's dead letters as plans: list them, put them back onto the stream, purge them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .._errors import ConfigurationError, QueueError
from .._plan import Command, Plan
from .._script import package_script
from .._validate import check_int
from .streams_entries import (
    MAX_BATCH,
    ORIGINAL_ID,
    REPLAYS,
    DeadLetter,
    ReplayResult,
    decode_value,
    entries,
    int_or_zero,
    pairs,
    queue_plan,
    text,
)

__all__ = ["DeadLetterPlans", "check_entry_ids"]

# What the scripts record beside the entry's own fields (those are prefixed with "data.").
_DEAD_META = ("id", "group", "consumer", "deliveries", "error")
_DATA_PREFIX = "data."
_ENTRY_ID = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")


class DeadLetterPlans:
    """The dead-letter plans of `QueueCore` (a base class: they use the queue's keys)."""

    __slots__ = ()
    key: bytes
    dead_key: bytes
    group: bytes
    max_len: int | None

    @queue_plan
    def dead_letters(self, count: int) -> Plan[list[DeadLetter]]:
        check_int(count, "count", minimum=1)
        reply = yield Command(("XRANGE", self.dead_key, "-", "+", "COUNT", count))
        return [self._dead_letter(entry_id, fields) for entry_id, fields in entries(reply)]

    @queue_plan
    def replay_dead_letters(self, ids: object, count: object, batch: object) -> Plan[ReplayResult]:
        """Put dead letters back onto the stream: one script per ``batch`` letters."""
        size = check_int(batch, "batch", minimum=1)
        if size > MAX_BATCH:
            raise ConfigurationError(f"batch must be <= {MAX_BATCH}, got {batch}")
        script = package_script("streams_replay")
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
                missing += [text(m) for m in reply[2]]
            return ReplayResult(replayed, tuple(missing))
        remaining = None if count is None else check_int(count, "count", minimum=1)
        last = "+"
        while remaining is None or remaining > 0:
            step = size if remaining is None else min(size, remaining)
            reply = yield script.eval(keys, (*head, "oldest", step, last))
            last = text(reply[0])
            done = _id_pairs(reply[1])
            replayed.update(done)
            if remaining is not None:
                remaining -= len(done)
            if not last or len(done) < step or last in done:
                break  # nothing left up to the bound: no empty round trip at the end
        return ReplayResult(replayed)

    @queue_plan
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

    def _dead_letter(self, entry_id: str, fields: object) -> DeadLetter:
        """A `DeadLetter` from an entry of the dead-letter stream.

        Raises:
            QueueError: the entry lacks what the queue's scripts record with every dead letter
                (another program added it to the dead-letter stream).
        """
        meta: dict[str, str] = {}
        data: dict[str, Any] = {}
        replays = 0
        for name, value in pairs(fields):
            if name == _DATA_PREFIX + REPLAYS:
                replays = int_or_zero(value)
            elif name == _DATA_PREFIX + ORIGINAL_ID:
                pass  # the entry's own id (``original_id`` below) is what failed
            elif name.startswith(_DATA_PREFIX):
                data[name[len(_DATA_PREFIX) :]] = decode_value(value)
            elif name in _DEAD_META:
                meta[name] = text(value)
        missing = [name for name in _DEAD_META if name not in meta]
        if missing or not meta["deliveries"].isdigit():
            what = f"lacks {missing}" if missing else f"has deliveries {meta['deliveries']!r}"
            raise QueueError(
                f"entry {entry_id} of {text(self.dead_key)!r} {what}: it is not a dead letter"
                f" this queue wrote (another program added it?); purge_dead_letters(["
                f"{entry_id!r}]) deletes it"
            )
        return DeadLetter(
            id=entry_id,
            original_id=meta["id"],
            data=data,
            error=meta["error"],
            deliveries=int(meta["deliveries"]),
            consumer=meta["consumer"],
            group=meta["group"],
            replays=replays,
        )


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
    return {text(items[i]): text(items[i + 1]) for i in range(0, len(items) - 1, 2)}
