"""Cache's logic: cache-aside with stampede protection (lock, xfetch), a near cache, warming."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .. import _metrics
from .._errors import BackendError, CacheValueError, ConfigurationError
from .._plan import Command, Pipeline, Plan, raise_first
from .._script import package_script
from .cache_keys import (
    _FRESH,
    _MISS,
    _MISSING,
    _NOT_INTEGER,
    _OVERFLOW,
    _SLOW,
    BUCKETS,
    MAX_EXACT,
    _batch,
    _server_ms,
)
from .cache_load_many import CacheManyLoads
from .cache_types import Ttl

__all__ = ["CacheCore"]

# Enough for any entry's header (rp2:<tag <= 32>:=<soft>:<took>:<generation>:), so a probe
# reads the header and never the value.
_HEADER_BYTES = 128


class CacheCore(CacheManyLoads):
    """The plans shared by `Cache` and `AsyncCache` (configuration, keys and loads below)."""

    @property
    def fast_reads(self) -> bool:
        """Whether plain reads may use ``MGET`` instead of the read script.

        Without a stale window an entry expires (``PX``) exactly at its soft expiry, and its
        header says so (``=<ms>``): an entry that exists is fresh, so reading it and its
        generation counter (same slot, even on a cluster) is all a read needs, with no server
        clock and no script. An entry written by a cache with a stale window still needs the
        script; such a read falls back to it (two round trips). Not with a near cache, which
        needs the remaining lifetime the script reports.
        """
        return self.stale_ms == 0 and self.near is None

    def _fast(self, entry: bytes, raw: bytes | None, generation: bytes | None) -> Any:
        """The value of a fast read, `_MISSING` for a miss, or `_SLOW` (ask the script)."""
        if raw is None:
            return _MISSING
        parts = raw.split(b":", 5)
        if len(parts) == 6 and parts[0] == b"rp2" and parts[4] != (generation or b"0"):
            return _MISSING  # written before a clear (the script would delete it; no matter)
        if len(parts) == 6 and not (parts[2] == b"0" or parts[2][:1] == b"="):
            return _SLOW
        value = self._read(entry, raw)
        if value is not _MISSING:
            self._count("hits")
        return value

    def get(self, key: object, default: Any) -> Plan[Any]:
        entry = self.entry_key(key)
        value = self.near_get(entry)
        if value is not _MISSING:
            return value
        generation = self.near.generation if self.near is not None else 0
        try:
            if self.fast_reads:
                raw, written = yield Command(("MGET", entry, self.gen_key(entry)))
                value = self._fast(entry, raw, written)
                if value is not _SLOW:
                    if value is _MISSING:
                        self._missed()
                        return default
                    return value
            if self.lean_hits:
                raw, written, now = yield from self.lean_read(entry)
                status, left = self.judge(raw, written, now)
            else:
                status, raw, _, left, _ = yield self._get_eval(entry, 0, "")
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("get", exc)
            return default
        value = self._read(entry, raw) if status == _FRESH else _MISSING
        if value is _MISSING:
            self._missed()
            return default
        self._count("hits")
        self._near_put(entry, raw, int(left), generation)
        return value

    def exists(self, key: object) -> Plan[bool]:
        entry = self.entry_key(key)
        if self.near is not None and self.near.get(entry) is not None:
            return True
        try:
            if self.lean_hits:
                status = yield from self._lean_probe(entry)
            else:
                status, _, _, _, _ = yield self._get_eval(entry, 4, "")
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("exists", exc)
            return False
        return bool(status == _FRESH)

    def _lean_probe(self, entry: bytes) -> Plan[int]:
        """`exists` without the script: the generation, the entry's first bytes (its header,
        never its value) and the server's clock in one round trip; the status the read script
        would give in probe mode."""
        generation, head, clock = raise_first(
            (
                yield Pipeline(
                    (
                        Command(("GET", self.gen_key(entry))),
                        Command(("GETRANGE", entry, 0, _HEADER_BYTES - 1)),
                        Command(("TIME",)),
                    )
                )
            )
        )
        now = _server_ms(clock)
        status = self.judge(head or None, generation or b"0", now)[0]  # b"": no such key
        if head and status == _MISS:  # of an older generation: the script deletes it
            status, _, _, _, _ = yield self._get_eval(entry, 4, "")
        return int(status)

    def set(
        self, key: object, value: Any, ttl: Ttl | None, *, only_absent: bool = False
    ) -> Plan[bool]:
        entry = self.entry_key(key)
        soft = self.soft_ms(ttl, forever=True)
        tag, payload = self.encode_entry(value)
        stored = yield from self._invalidating(
            [entry],
            self._set(
                self._set_eval(entry, payload, soft, 0, "", tag=tag, only_absent=only_absent)
            ),
        )
        return bool(stored)

    def delete(self, key: object) -> Plan[bool]:
        entry = self.entry_key(key)
        deleted = yield from self._write(
            [entry],
            package_script("cache_delete").eval(
                (entry, self.lock_key(entry), self.gen_key(entry)),
                (self.lock_ttl_ms, self.channel, self.origin),
            ),
        )
        return bool(deleted)

    def touch(self, key: object, ttl: Ttl | None) -> Plan[bool]:
        entry = self.entry_key(key)
        soft = self.soft_ms(ttl, forever=True)
        touched = yield from self._write(
            [entry],
            package_script("cache_touch").eval(
                (entry, self.gen_key(entry)), (soft, self.stale_ms, self.channel, self.origin)
            ),
        )
        return bool(touched)

    def incr(self, key: object, delta: int, ttl: Ttl | None, create: bool) -> Plan[int | None]:
        """Add ``delta`` to an integer entry in one script; None if missing and not ``create``."""
        entry = self.entry_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ConfigurationError(f"delta must be an int, not {type(delta).__name__}")
        if abs(delta) > MAX_EXACT:
            raise ConfigurationError(f"delta must be within ±(2**53 - 1), got {delta}")
        soft = self.soft_ms(ttl, forever=True)
        code, value = yield from self._write(
            [entry],
            package_script("cache_incr").eval(
                (entry, self.lock_key(entry), self.gen_key(entry)),
                (
                    self.serializer.name,
                    delta,
                    1 if create else 0,
                    soft,
                    self.stale_ms,
                    self.lock_ttl_ms,
                    self.channel,
                    self.origin,
                ),
            ),
        )
        if code == _NOT_INTEGER:
            raise CacheValueError(
                f"cache key {entry!r} does not hold an integer: incr/decr need a value stored "
                "as an int (by set, add, set_many or incr)"
            )
        if code == _OVERFLOW:
            raise CacheValueError(
                f"incr/decr of cache key {entry!r} by {delta} would leave ±(2**53 - 1), the "
                "integers the server-side script computes exactly"
            )
        if code == 0:
            return None
        return int(value)

    def clear(self) -> Plan[None]:
        """Make every entry of the namespace a miss: O(1) round trips, whatever the key count.

        Standalone: one script increments the namespace's generation (and tells near caches).
        Cluster: one pipeline increments the `BUCKETS` generation counters (one round trip per
        node), then one PUBLISH tells near caches, only once every counter moved.
        """
        self.on_invalidate_all()
        try:
            if not self.cluster:
                yield package_script("cache_clear").eval(
                    (self.gen_key(b""),), (self.channel, self.origin)
                )
                return
            prefix = b"{cache:" + self.namespace + b":"
            effects = tuple(
                Command(("INCR", prefix + str(b).encode() + b"}:gen")) for b in range(BUCKETS)
            )
            raise_first((yield Pipeline(effects)))
            if self.channel:
                yield Command(("PUBLISH", self.channel, self.origin.encode() + b":*"))
        finally:
            self.on_invalidate_all()

    # --- bulk operations -----------------------------------------------------------------

    def get_many(self, keys: Iterable[Any], default: Any) -> Plan[list[Any]]:
        _, entries = self._entries(keys)
        values: dict[bytes, Any] = {}
        for entry in entries:
            value = self.near_get(entry)
            if value is not _MISSING:
                values[entry] = value
        wanted = list(dict.fromkeys(e for e in entries if e not in values))
        if wanted and self.fast_reads:
            try:
                wanted = yield from self._fast_many(wanted, values)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_many", exc)
                wanted = []
        if wanted:
            generation = self.near.generation if self.near is not None else 0
            try:
                if self.lean_hits:
                    read = yield from self._lean_many(wanted)
                    # An entry of an older generation (a `clear` came since) is a miss either
                    # way; the read script, asked again for those, deletes it so its memory is
                    # reclaimed now.
                    older = [e for e, (status, raw, *_) in read.items() if raw and status == _MISS]
                    if older:
                        read.update((yield from self._read_many(older, 0, "")))
                else:
                    read = yield from self._read_many(wanted, 0, "")
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_many", exc)
                read = {}
            for entry, (status, raw, _, left, _) in read.items():
                if status != _FRESH:
                    continue
                value = self._read(entry, raw)
                if value is not _MISSING:
                    self._count("hits")
                    values[entry] = value
                    self._near_put(entry, raw, left, generation)
        if _metrics.on:
            self._missed(sum(1 for entry in set(entries) if entry not in values))
        return [values.get(entry, default) for entry in entries]

    def _fast_many(self, wanted: list[bytes], values: dict[bytes, Any]) -> Plan[list[bytes]]:
        """`fast_reads` for many keys: one ``MGET`` (generation first) per slot and batch.
        Fills ``values`` with the hits; returns the entries only the script can judge."""
        batches = self._batches(wanted)
        replies = yield from _batch([Command(("MGET", self.gen_key(b[0]), *b)) for b in batches])
        slow = []
        for batch, reply in zip(batches, replies, strict=True):
            for entry, raw in zip(batch, reply[1:], strict=True):
                value = self._fast(entry, raw, reply[0])
                if value is _SLOW:
                    slow.append(entry)
                elif value is not _MISSING:
                    values[entry] = value
        return slow

    def set_many(self, items: Mapping[Any, Any] | Iterable[Any], ttl: Ttl | None) -> Plan[None]:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded: dict[bytes, tuple[str, bytes, int]] = {}
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ConfigurationError("set_many() needs a mapping or (key, value) pairs")
            entry = self.entry_key(pair[0])
            tag, payload = self.encode_entry(pair[1])  # all checked before anything is sent
            encoded[entry] = (tag, payload, self.soft_ms(ttl, forever=True))
        if encoded:
            yield from self._store_many(encoded, "")

    def delete_many(self, keys: Iterable[Any]) -> Plan[int]:
        _, entries = self._entries(keys)
        distinct = list(dict.fromkeys(entries))
        if not distinct:
            return 0
        effects = [
            package_script("cache_delete_many").eval(
                self._many_keys(batch), (self.lock_ttl_ms, self.channel, self.origin)
            )
            for batch in self._batches(distinct)
        ]
        replies = yield from self._write_batch(distinct, effects)
        return sum(int(r) for r in replies)
