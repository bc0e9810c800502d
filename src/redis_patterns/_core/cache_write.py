"""Write-through and write-behind: the database and the cache kept consistent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import BackendError, ConfigurationError
from .._keys import check_name, make_key
from .._logging import coalesced, error_kind
from .._plan import Call, Command, Plan, Sleep
from .._script import package_script
from .._validate import Duration, check_int, duration_ms
from .cache import CacheCore
from .cache_keys import _MISSING, _text
from .cache_types import check_callable
from .reconnect import TRANSIENT, reconnect_backoff
from .replication import replicated

__all__ = ["FlushResult", "PendingWrite", "WriteBehindCore", "WriteThroughCore"]

log = logging.getLogger("redis_patterns.cache")


class WriteThroughCore:
    """Plans of `WriteThrough`: the database first, then the cache, consistent if either fails.

    Keys whose cache entry could not be invalidated after a database write are remembered in
    ``dirty`` and invalidated before any later operation; until that works they are read from
    the database directly, never from the (possibly stale) cache.
    """

    def __init__(
        self,
        cache: CacheCore,
        store: Callable[..., Any],
        remove: Callable[..., Any] | None,
        asynchronous: bool,
    ) -> None:
        check_callable(store, "store", asynchronous=asynchronous)
        if remove is not None:
            check_callable(remove, "remove", asynchronous=asynchronous)
        self.cache = cache
        self.store = store
        self.remove = remove
        self.dirty: dict[bytes, Any] = {}

    def flush_dirty(self) -> Plan[None]:
        for entry, key in list(self.dirty.items()):
            try:
                yield from self.cache.delete(key)
            except BackendError:
                continue
            self.dirty.pop(entry, None)

    def write(self, key: Any, value: Any, ttl: Duration | None) -> Plan[None]:
        entry = self.cache.entry_key(key)
        self.cache.encode(value)  # an unstorable value fails here, before the database write
        if ttl is not None:
            duration_ms(ttl, "ttl")
        yield from self.flush_dirty()
        yield Call(self.store, (key, value))  # raises: the cache was not touched
        try:
            yield from self.cache.set(key, value, ttl)
        except BackendError as exc:
            yield from self._invalidate(entry, key, exc)

    def delete(self, key: Any) -> Plan[None]:
        entry = self.cache.entry_key(key)
        if self.remove is None:
            raise ConfigurationError("WriteThrough.delete needs remove= (the database delete)")
        yield from self.flush_dirty()
        yield Call(self.remove, (key,))
        try:
            yield from self.cache.delete(key)
        except BackendError as exc:
            yield from self._invalidate(entry, key, exc)

    def _invalidate(self, entry: bytes, key: Any, cause: BackendError) -> Plan[None]:
        message = "cache write for %r failed after the database write (%s); invalidating"
        coalesced(log, ("write-through", type(cause)), message, entry, cause)
        try:
            yield from self.cache.delete(key)
        except BackendError as exc:
            self.dirty[entry] = key
            raise BackendError(
                f"the database was written but the cache entry {entry!r} could neither be "
                "updated nor deleted; this WriteThrough will not serve it from the cache and "
                "retries the invalidation before its next operation (other processes may serve "
                "the old value until the entry's ttl)"
            ) from exc


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One write handed to a write-behind ``flush``: the latest value of ``key`` in the batch.

    ``version`` increases with every write (it is the stream entry id as an int: ms * 10**6 +
    sequence): a database that keeps it can refuse an older write that arrives late, e.g.
    ``UPDATE ... WHERE version < :version``, since a reclaimed batch may be flushed after a
    newer one. ``deliveries`` counts how often this entry was handed out (1 the first time);
    ``superseded`` how many earlier writes of the key in this batch it replaced. ``key`` is a
    str (a bytes key is decoded as UTF-8, undecodable bytes kept as surrogate escapes).
    """

    key: str
    value: Any
    version: int
    id: str
    deliveries: int
    superseded: int = 0


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one flush cycle did: stream entries read, writes flushed after coalescing, entries
    moved to the dead letters, and whether the flush callback failed."""

    read: int
    flushed: int
    dead: int
    failed: bool = False


def _version(entry_id: str) -> int:
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


class WriteBehindCore:
    """Plans of `WriteBehind`: a cache write plus a stream entry; a flusher that coalesces."""

    def __init__(
        self,
        cache: CacheCore,
        flush: Callable[..., Any],
        *,
        batch_size: int,
        interval: Duration,
        claim_idle: Duration,
        max_attempts: int,
        group: str,
        asynchronous: bool,
        wait_replicas: int = 0,
    ) -> None:
        check_callable(flush, "flush", asynchronous=asynchronous)
        self.wait_replicas = wait_replicas  # checked against the client's kind by the facade
        self.cache = cache
        self.flush = flush
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.interval = duration_ms(interval, "interval", allow_zero=True) / 1000
        self.claim_idle_ms = duration_ms(claim_idle, "claim_idle")
        self.max_attempts = check_int(max_attempts, "max_attempts", minimum=1)
        self.group = check_name(group, "group")
        self.stream = make_key("cache", cache.namespace, "writes")
        self.dead_stream = make_key("cache", cache.namespace, "writes-dead")
        self.stopping = False
        self.stats = {
            "written": 0,
            "read": 0,
            "flushed": 0,
            "dead": 0,
            "failures": 0,
            "backend_errors": 0,
        }

    def write(self, key: Any, value: Any, ttl: Duration | None, cluster: bool) -> Plan[str]:
        entry = self.cache.entry_key(key)
        raw_key = check_name(key, "key")
        payload = self.cache.encode(value)
        soft = self.cache.soft_ms(ttl)
        cache = self.cache
        self.cache.on_invalidate(entry)
        try:
            if not cluster:
                script = package_script("cache_write_write").eval(
                    (entry, cache.lock_key(entry), self.stream, cache.gen_key(entry)),
                    (
                        cache.serializer.name,
                        payload,
                        soft,
                        cache.stale_ms,
                        cache.lock_ttl_ms,
                        cache.channel,
                        cache.origin,
                        raw_key,
                    ),
                )
                reply = yield from replicated(script, self.wait_replicas, "the queued write")
            else:
                # The entry and the stream live in different slots: record the write durably
                # first, then update the cache (a crash in between loses no write).
                reply = yield Command(
                    (
                        "XADD",
                        self.stream,
                        "*",
                        "k",
                        raw_key,
                        "f",
                        cache.serializer.name,
                        "p",
                        payload,
                    )
                )
                yield from cache._set(cache._set_eval(entry, payload, soft, 0, ""))
        finally:
            self.cache.on_invalidate(entry)
        self.stats["written"] += 1
        return _text(reply)

    def flush_once(self, consumer: str) -> Plan[FlushResult]:
        """Read a batch (reclaimed entries first), coalesce per key, flush, acknowledge."""
        check_name(consumer, "consumer")
        entries = yield package_script("cache_write_read").eval(
            (self.stream,), (self.group, consumer, self.batch_size, self.claim_idle_ms)
        )
        if not entries:
            return FlushResult(0, 0, 0)
        latest: dict[str, PendingWrite] = {}
        counts: dict[str, int] = {}
        ids: list[str] = []
        dead: list[str] = []
        for entry_id, deliveries, fields in entries:
            entry_id = _text(entry_id)
            data = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
            key = _text(data.get("k", b""))
            payload = data.get("p")
            if int(deliveries) > self.max_attempts or payload is None:
                dead.append(entry_id)
                continue
            if _text(data.get("f", b"")) != self.cache.serializer.name:
                dead.append(entry_id)
                continue
            try:
                value = self.cache.decode(self.cache.entry_key(key), payload)
            except ConfigurationError:  # a key no writer of ours could have produced
                value = _MISSING
            if value is _MISSING:
                dead.append(entry_id)
                continue
            ids.append(entry_id)
            counts[key] = counts.get(key, 0) + 1
            # Stream order is write order: the last entry of a key in the batch wins.
            latest[key] = PendingWrite(
                key, value, _version(entry_id), entry_id, int(deliveries), counts[key] - 1
            )
        if dead:
            yield package_script("cache_write_ack").eval(
                (self.stream, self.dead_stream),
                (self.group, f"undeliverable after {self.max_attempts} attempts", *dead),
            )
            self.stats["dead"] += len(dead)
            log.error("write-behind: %d entries moved to %r", len(dead), self.dead_stream)
        self.stats["read"] += len(entries)
        if not latest:
            return FlushResult(len(entries), 0, len(dead))
        batch = sorted(latest.values(), key=lambda w: w.version)
        try:
            yield Call(self.flush, (batch,))
        except Exception as exc:
            # Not acknowledged: the entries stay pending and are reclaimed after claim_idle
            # (their delivery count rises; past max_attempts they go to the dead letters).
            self.stats["failures"] += 1
            message = "write-behind flush of %d writes failed: %r"
            coalesced(log, ("flush", self.stream, type(exc)), message, len(batch), exc)
            return FlushResult(len(entries), 0, len(dead), failed=True)
        yield package_script("cache_write_ack").eval(
            (self.stream, self.dead_stream), (self.group, "", *ids)
        )
        self.stats["flushed"] += len(batch)
        return FlushResult(len(entries), len(batch), len(dead))

    def run(self, consumer: str, max_cycles: int | None) -> Plan[None]:
        """Flush until `stopping` (or ``max_cycles``), pausing ``interval`` after a short batch.

        A server that is away (restarting, loading its data, not answering) is ridden out with
        backoff; a failed cycle counts towards ``max_cycles``. Entries read but not yet
        acknowledged when it went away stay pending and are reclaimed after ``claim_idle``.
        """
        check_name(consumer, "consumer")
        cycles = 0
        failures = 0  # in a row
        while not self.stopping and (max_cycles is None or cycles < max_cycles):
            cycles += 1
            try:
                result = yield from self.flush_once(consumer)
            except TRANSIENT as exc:
                self.stats["backend_errors"] += 1
                message = "write-behind flusher %r: %s; retrying"
                coalesced(log, ("flusher", self.stream, error_kind(exc)), message, consumer, exc)
                yield from reconnect_backoff(failures)
                failures += 1
                continue
            failures = 0
            if result.read < self.batch_size or result.failed:
                yield Sleep(self.interval)

    def pending(self) -> Plan[int]:
        """Writes not yet flushed (stream entries not yet acknowledged and deleted)."""
        length = yield Command(("XLEN", self.stream))
        return int(length)
