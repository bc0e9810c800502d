"""One key's reads and loads: the entry's header, the near cache's hooks, the read and store
scripts' effects, the lean read, and get_or_load (one loader across processes)."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from .. import _metrics
from .._errors import BackendError, ConfigurationError, LockTimeoutError, PermissionDeniedError
from .._logging import coalesced
from .._plan import Call, Command, Eval, Multi, Now, Pipeline, Plan, Sleep, raise_first
from .._script import package_script
from .cache_keys import (
    _EARLY,
    _FRESH,
    _MALFORMED,
    _MISS,
    _MISSING,
    _MODES,
    _STALE,
    CacheEntries,
    _batch,
    _server_ms,
    _text,
)
from .cache_types import Ttl, check_callable
from .pubsub import Message

__all__ = ["CacheLoads"]

T = TypeVar("T")

log = logging.getLogger("redis_patterns.cache")

# How long the scratch key of a big entry without expiry may live (ms), and one a block's
# APPEND made when its prep did not run: it is renamed (and persisted) or deleted in the same
# MULTI/EXEC block, so this only bounds one left behind by a block whose commit did not run
# (NOSCRIPT) and that was never sent again.
_SCRATCH_MS = 60_000


class CacheLoads(CacheEntries):
    """The plans that read and load: `get_or_load`, with the entries' header, the near cache's
    hooks and the read and store scripts' effects that every read and write uses."""

    # --- the entry's header --------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """Serialize ``value``; `ConfigurationError` (naming the type) if it cannot be stored."""
        payload = self.serializer.dumps(value)
        if len(payload) > self.max_value_bytes:
            raise ConfigurationError(
                f"value of type {type(value).__name__} is {len(payload)} bytes serialized; "
                f"max_value_bytes is {self.max_value_bytes}"
            )
        return payload

    def encode_entry(self, value: Any) -> tuple[str, bytes]:
        """``(format tag, payload)``: an `int` is stored as decimal text under the tag ``int``
        whatever the serializer (JSON's own text for it is already decimal), so `incr` can
        change it in a script; everything else goes through the serializer."""
        if type(value) is int and self.serializer.name != "json":
            return "int", str(value).encode()
        return self.serializer.name, self.encode(value)

    def payload_of(self, entry_key: bytes, raw: bytes) -> tuple[str, bytes] | None:
        """``(format tag, payload)`` of a stored entry, or None (logged) if malformed or foreign."""
        parts = raw.split(b":", 5)
        if len(parts) != 6 or parts[0] != b"rp2":
            self._count("malformed")
            # Coalesced: after an upgrade every older entry (rp1) is malformed once.
            message = "cache entry %r is malformed; treated as a miss"
            coalesced(log, ("malformed", self.namespace), message, entry_key)
            return None
        tag = parts[1].decode("ascii", "replace")
        if tag != self.serializer.name and tag != "int":
            self._count("malformed")
            message = (
                "cache entry %r was written with serializer %r, this cache uses %r; treated as "
                "a miss (never decoded)"
            )
            kind = ("foreign", self.namespace, tag)
            coalesced(log, kind, message, entry_key, tag, self.serializer.name)
            return None
        return tag, parts[5]

    def decode(self, entry_key: bytes, payload: bytes, tag: str | None = None) -> Any:
        """The value in ``payload``, or `_MISSING` (logged) if it cannot be decoded."""
        try:
            if tag == "int":
                return int(payload)
            return self.serializer.loads(payload)
        except Exception as exc:  # a hostile or corrupt entry is a miss, never a crash
            self._count("malformed")
            message = "cache entry %r cannot be decoded (%s); treated as a miss"
            coalesced(log, ("undecodable", self.namespace, type(exc)), message, entry_key, exc)
            return _MISSING

    def _read(self, entry_key: bytes, raw: bytes | None) -> Any:
        if raw is None:
            return _MISSING
        parsed = self.payload_of(entry_key, raw)
        return _MISSING if parsed is None else self.decode(entry_key, parsed[1], parsed[0])

    # --- near cache ----------------------------------------------------------------------

    def near_get(self, entry_key: bytes) -> Any:
        """The near cache's value for ``entry_key``, or `_MISSING` (zero round trips)."""
        if self.near is None:
            return _MISSING
        raw = self.near.get(entry_key)
        if raw is None:
            return _MISSING
        if _metrics.on:
            _metrics.CACHE_NEAR_HITS.record(self._labels)
        return self._read(entry_key, raw)

    def _near_put(self, entry_key: bytes, raw: bytes, left_ms: int, generation: int) -> None:
        if self.near is not None:
            ttl = self.near.max_age if left_ms < 0 else left_ms / 1000  # -1: no expiry
            self.near.put(entry_key, raw, ttl, generation)

    def on_invalidate(self, entry_key: bytes) -> None:
        if self.near is not None:
            self.near.invalidate(entry_key)

    def on_invalidate_all(self) -> None:
        if self.near is not None:
            self.near.clear()

    def on_message(self, message: Message) -> None:
        """An invalidation ``<origin>:<entry key>`` (``<origin>:*``: everything, a `clear`);
        our own writes were applied already."""
        origin, _, entry = message.data.partition(b":")
        if origin == self.origin.encode():
            return
        if entry == b"*":
            self.on_invalidate_all()
        else:
            self.on_invalidate(entry)

    def on_subscription_state(self, healthy: bool) -> None:
        if self.near is not None:
            self.near.set_healthy(healthy)

    # --- the scripts' effects ------------------------------------------------------------

    def _get_eval(self, entry: bytes, mode: int, token: str, r: float | None = None) -> Eval:
        if r is None:
            r = 1.0 - self._rng.random()  # in (0, 1]: log(r) is finite
        return package_script("cache_get").eval(
            (entry, self.lock_key(entry), self.gen_key(entry)),
            (mode, token, self.lock_ttl_ms, self.beta, r),
        )

    def _set_eval(
        self,
        entry: bytes,
        payload: bytes,
        soft: int,
        delta: int,
        token: str,
        stale: bool = True,
        *,
        tag: str | None = None,
        generation: str = "",
        only_absent: bool = False,
    ) -> Eval:
        return package_script("cache_set").eval(
            (entry, self.lock_key(entry), self.gen_key(entry)),
            (
                self.serializer.name if tag is None else tag,
                payload,
                soft,
                self.stale_ms if stale else 0,
                delta,
                token,
                self.lock_ttl_ms,
                self.channel,
                self.origin,
                generation,
                1 if only_absent else 0,
            ),
        )

    def _set(self, store: Eval) -> Plan[int]:
        """Run a store of `_set_eval`: 1 when stored, 0 when dropped, as ``cache_set.lua``
        decides.

        A payload of `big_value_bytes` or more is not passed through Lua, where receiving it
        alone costs the server about 1.3 ms per MB (issue 16). The same decisions and the same
        entry, in one block: ``MULTI``, ``SET NX PX`` (a TTL for the scratch key, whatever
        runs), ``cache_set_prep`` (every check; the header into a scratch key), ``APPEND`` of
        the payload, ``cache_set_commit`` (the scratch key renamed into place), ``EXEC``. One
        round trip, atomic: no read sees a header without its value.
        """
        tag, payload, soft, stale, delta, token, lock_ttl, channel, origin, generation, only = (
            store.args
        )
        if not isinstance(payload, bytes) or len(payload) < self.big_value_bytes:
            return int((yield store))
        entry, lock, gen = store.keys
        scratch = self.scratch_key(entry if isinstance(entry, bytes) else entry.encode())
        prep = package_script("cache_set_prep").eval(
            (entry, lock, gen, scratch),
            (tag, soft, stale, delta, token, generation, only, _SCRATCH_MS),
        )
        forever = 1 if isinstance(soft, int) and soft < 0 else 0
        commit = package_script("cache_set_commit").eval(
            (scratch, entry, lock), (len(payload), forever, token, lock_ttl, channel, origin)
        )
        # The scratch key gets a TTL before anything else writes it: if both scripts met
        # NOSCRIPT the APPEND still makes it, the payload alone, and should the block never be
        # sent again it must not stay forever. The prep's SET replaces it with its own.
        bound = Command(("SET", scratch, b"", "PX", _SCRATCH_MS, "NX"))
        try:
            replies = yield Multi((bound, prep, Command(("APPEND", scratch, payload)), commit))
        except PermissionDeniedError:
            # An ACL user without @transaction (learnt once per client; the block did not
            # run): the one script decides the same, passing the value through Lua.
            return int((yield store))
        # The prep's error (add's WRONGTYPE entry) first; the commit then stored nothing.
        return int(raise_first(replies)[3])

    def _write(self, entries: list[bytes], effect: Eval) -> Plan[Any]:
        """Send a write, dropping this process's near copies before it and after its reply."""
        return (yield from self._write_batch(entries, [effect]))[0]

    def _write_batch(self, entries: Collection[bytes], effects: list[Eval]) -> Plan[list[Any]]:
        """`_write` for several scripts, in one round trip (per node)."""
        return (yield from self._invalidating(entries, _batch(effects)))

    def _invalidating(self, entries: Collection[bytes], plan: Plan[T]) -> Plan[T]:
        """Run a writing ``plan``, dropping this process's near copies of ``entries`` before
        it and after its reply."""
        for entry in entries:
            self.on_invalidate(entry)
        try:
            return (yield from plan)
        finally:
            for entry in entries:  # the reply arrived: no read begun before now may store
                self.on_invalidate(entry)

    def lean_read(self, entry: bytes) -> Plan[tuple[Any, bytes, int]]:
        """The entry, its generation counter and the server's clock in one round trip
        (``MGET`` + ``TIME`` pipelined): the value never passes through Lua. Returns
        ``(raw entry or None, generation, server ms)``."""
        (raw, generation), clock = raise_first(
            (yield Pipeline((Command(("MGET", entry, self.gen_key(entry))), Command(("TIME",)))))
        )
        return raw, generation or b"0", _server_ms(clock)

    def judge(
        self, raw: bytes | None, generation: bytes, now_ms: int, r: float | None = None
    ) -> tuple[int, int]:
        """``(status, ms until soft expiry)`` of a `lean_read`, as ``cache_get.lua`` judges it
        (without taking a lock): `_FRESH` (-1: no soft expiry), `_STALE`, `_MISS` (absent, or
        of an older generation), `_MALFORMED`, or `_EARLY` for a fresh entry that xfetch
        would refresh early with the random draw ``r``."""
        if raw is None:
            return _MISS, 0
        parts = raw.split(b":", 5)
        if len(parts) != 6 or parts[0] != b"rp2":
            return _MALFORMED, 0
        soft, took, written = parts[2].removeprefix(b"="), parts[3], parts[4]
        if not (soft.isdigit() and took.isdigit() and written.isdigit()):
            return _MALFORMED, 0
        if written != generation:
            return _MISS, 0
        if soft == b"0":
            return _FRESH, -1
        left = int(soft) - now_ms
        if left <= 0:
            return _STALE, 0
        if r is not None and int(took) * self.beta * -math.log(r) >= left:
            return _EARLY, left
        return _FRESH, left

    # --- one key's load -------------------------------------------------------------------

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def get_or_load(self, key: object, loader: Callable[[], Any], ttl: Ttl | None) -> Plan[Any]:
        """`Cache.get_or_load`, whole: check the arguments, then one load per key at a time in
        this process (single-flight: the others wait through `Call` and share its outcome),
        `read_or_load` across processes, and a stale or early-expiring entry's refresh started
        in the background."""
        entry = self.entry_key(key)
        check_callable(loader, "loader", asynchronous=self.asynchronous)
        self.check_ttl(ttl)
        for _ in range(100):  # bounded: each retry follows a cancelled leader
            flight = self.flights.join(entry)
            if flight is not None:
                led, value = yield Call(self.flights.wait, (flight,))
                if led:
                    return value
                continue
            try:
                token = self.new_token()
                value, refresh = yield from self.read_or_load(entry, loader, ttl, token)
                if refresh:
                    yield from self._start(self.refresh(entry, loader, ttl, token))
            except BaseException as exc:
                self.flights.leave(entry, error=exc)
                raise
            self.flights.leave(entry, value)
            return value
        raise RuntimeError("single-flight: too many cancelled leaders in a row")

    def _start(self, plan: Plan[None]) -> Plan[None]:
        """Run ``plan`` in the background (the runner's `spawn`), or now without one."""
        if self.spawn is None:
            yield from plan
        else:
            yield Call(self.spawn, (plan,))

    def read_or_load(
        self, entry: bytes, loader: Callable[[], Any], ttl: Ttl | None, token: str
    ) -> Plan[tuple[Any, bool]]:
        """Read; on a miss load (one loader across processes), or wait and read its result.

        Returns ``(value, refresh)``: ``refresh`` means this caller took the recompute lock
        for a stale or early-expiring entry it is returning at once, and must run `refresh`
        in the background. With ``fail_open``, a backend error runs the loader instead (its
        result returned, not stored).
        """
        value = self.near_get(entry)
        if value is not _MISSING:
            return value, False
        generation = self.near.generation if self.near is not None else 0
        deadline: float | None = None
        pause = 0.01
        # A fresh hit is judged here (`lean_read`): only a miss, a stale entry or an early
        # refresh goes on to the script, which takes the recompute lock. xfetch's random draw
        # is made once, so the script decides an early refresh as the judgment here did.
        lean = self.lean_hits
        r = 1.0 - self._rng.random() if lean and self.mode == _MODES["xfetch"] else None
        while True:
            try:
                if lean:
                    lean = False
                    raw, written, now = yield from self.lean_read(entry)
                    status, left = self.judge(raw, written, now, r)
                    took = 0
                    if status != _FRESH:
                        status, raw, took, left, written = yield self._get_eval(
                            entry, self.mode, token, r
                        )
                else:
                    status, raw, took, left, written = yield self._get_eval(entry, self.mode, token)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_or_load", exc)
                return (yield Call(loader)), False
            if status in (_FRESH, _EARLY, _STALE):
                value = self._read(entry, raw)
                if value is not _MISSING:
                    self._count("hits")
                    if status == _FRESH:
                        self._near_put(entry, raw, int(left), generation)
                    elif status == _STALE:
                        self._count("stale_served")
                    elif status == _EARLY:
                        self._count("early_refreshes")
                    return value, bool(took)
                # A foreign or corrupt entry: replace it. A fresh one looked like a hit, so no
                # lock was taken: store it as a plain set does (a loader's store needs its lock).
                self._count("misses")
                replace = token if took else ""
                return (yield from self._load(entry, loader, ttl, replace, _text(written))), False
            if took:
                self._count("misses")
                return (yield from self._load(entry, loader, ttl, token, _text(written))), False
            # Another process is loading this key: wait briefly, then read its result.
            deadline, pause = yield from self._wait_for_loader(deadline, pause, repr(entry))

    def _wait_for_loader(
        self, deadline: float | None, pause: float, what: str
    ) -> Plan[tuple[float, float]]:
        """Sleep before reading again keys another process is loading (10 -> 100 ms polls);
        `LockTimeoutError` once ``wait_timeout`` has passed. Returns (deadline, next pause)."""
        now = yield Now()
        if deadline is None:
            deadline = now + self.wait_timeout
        elif now >= deadline:
            raise LockTimeoutError(
                f"cache key(s) {what}: another process held the recompute lock for "
                f"{self.wait_timeout:.3g}s and stored nothing"
            )
        yield Sleep(min(pause, max(0.0, deadline - now)))
        return deadline, min(pause * 1.5, 0.1)

    def _load(
        self,
        entry: bytes,
        loader: Callable[[], Any],
        ttl: Ttl | None,
        token: str,
        generation: str = "",
    ) -> Plan[Any]:
        soft = self.soft_ms(ttl, forever=True)
        started = yield Now()
        self._count("loads")
        negative = False
        try:
            value = yield Call(loader)
            if value is None and self.negative_ms is not None:
                soft, negative = self.negative_ms, True  # and no stale window: absence is cheap
        except Exception:
            self._count("load_errors")
            yield from self._unlock_quietly(entry, token, self.backoff_ms)
            raise
        except BaseException:  # cancelled or interrupted: not the store's fault, let go now
            yield from self._unlock_quietly(entry, token, 0)
            raise
        if _metrics.on:
            _metrics.CACHE_LOAD_SECONDS.record(self._labels, (yield Now()) - started)
        try:
            if value is None and self.negative_ms is None:
                tagged = None
            else:
                tagged = self.encode_entry(value)
        except ConfigurationError:  # a bug in the caller, not a failing store: no backoff
            yield from self._unlock_quietly(entry, token, 0)
            raise
        if tagged is None:  # None is not cached unless negative_ttl is set
            yield from self._unlock_quietly(entry, token, 0)
            return value
        finished = yield Now()
        delta = max(0, round((finished - started) * 1000))
        try:
            yield from self._set(
                self._set_eval(
                    entry,
                    tagged[1],
                    soft,
                    delta,
                    token,
                    stale=not negative,
                    tag=tagged[0],
                    generation=generation,
                )
            )
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("storing a loaded value", exc)
        return value

    def _unlock(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        yield package_script("cache_unlock").eval((self.lock_key(entry),), (token, backoff_ms))

    def _unlock_quietly(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        """`_unlock`, except that with ``fail_open`` a backend error is logged, not raised
        (the loader's own outcome is what the caller must see)."""
        try:
            yield from self._unlock(entry, token, backoff_ms)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("releasing a recompute lock", exc)

    def refresh(
        self, entry: bytes, loader: Callable[[], Any], ttl: Ttl | None, token: str
    ) -> Plan[None]:
        """Reload a stale or early-expiring entry in the background; on failure keep the old."""
        self._count("refreshes")
        try:
            yield from self._load(entry, loader, ttl, token)
        except Exception as exc:
            message = "refreshing cache key %r failed (%r); the stale value stays in place"
            coalesced(log, ("refresh", type(exc)), message, entry, exc)
