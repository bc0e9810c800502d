"""The cache's loading plans: get_or_load (one loader across processes), its bulk twin,
background refreshes, warming."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import _metrics
from .._errors import BackendError, ConfigurationError, LockTimeoutError
from .._logging import coalesced
from .._plan import Call, Now, Pipeline, Plan, Sleep
from .._script import package_script
from .._validate import Duration, check_int, duration_ms
from .cache_keys import _EARLY, _FRESH, _MISSING, _MODES, _STALE, CacheEntries, _batch, _text
from .cache_types import Ttl, WarmResult, check_callable

__all__ = ["CacheLoads"]

log = logging.getLogger("redis_patterns.cache")


class CacheLoads(CacheEntries):
    """The plans that read and load: `get_or_load`, `get_or_load_many`, `warm`."""

    def _read_many(
        self, entries: list[bytes], mode: int, token: str
    ) -> Plan[dict[bytes, tuple[int, Any, int, int, str]]]:
        """``{entry: (status, raw, took, left, generation)}`` for distinct ``entries``."""
        batches = self._batches(entries)
        effects = []
        for batch in batches:
            rs = [1.0 - self._rng.random() for _ in batch]
            effects.append(
                package_script("cache_get_many").eval(
                    self._many_keys(batch), (mode, token, self.lock_ttl_ms, self.beta, *rs)
                )
            )
        replies = yield from _batch(effects)
        out: dict[bytes, tuple[int, Any, int, int, str]] = {}
        for batch, reply in zip(batches, replies, strict=True):
            generation = _text(reply[0])
            for i, entry in enumerate(batch):
                status, raw, took, left = reply[1 + 4 * i : 5 + 4 * i]
                out[entry] = (int(status), raw, int(took), int(left), generation)
        return out

    def _store_many(
        self,
        encoded: dict[bytes, tuple[str, bytes, int]],
        token: str,
        generations: Mapping[bytes, str] | None = None,
        delta: int = 0,
    ) -> Plan[dict[bytes, bool]]:
        """Store entries, one script per slot and batch; with a loader's ``token``, each batch
        only if the generation its first entry was read under (``generations``) still holds:
        one counter per batch, since a batch lives in one slot."""
        batches = self._batches(list(encoded))
        effects = []
        for batch in batches:
            generation = "" if generations is None else generations[batch[0]]
            args: list[Any] = [
                self.stale_ms,
                self.lock_ttl_ms,
                self.channel,
                self.origin,
                token,
                generation,
            ]
            for entry in batch:
                tag, payload, soft = encoded[entry]
                args += (tag, payload, soft, delta)
            effects.append(
                package_script("cache_set_many").eval(self._many_keys(batch), tuple(args))
            )
        for entry in encoded:
            self.on_invalidate(entry)
        try:
            replies = yield from _batch(effects)
        finally:
            for entry in encoded:
                self.on_invalidate(entry)
        stored: dict[bytes, bool] = {}
        for batch, reply in zip(batches, replies, strict=True):
            for entry, flag in zip(batch, reply, strict=True):
                stored[entry] = bool(flag)
        return stored

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
            yield self._set_eval(
                entry,
                tagged[1],
                soft,
                delta,
                token,
                stale=not negative,
                tag=tagged[0],
                generation=generation,
            )
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("storing a loaded value", exc)
        return value

    def _unlock(self, entry: bytes, token: str, backoff_ms: int) -> Plan[None]:
        yield package_script("cache_unlock").eval((self.lock_key(entry),), (token, backoff_ms))

    def _unlock_many(self, entries: list[bytes], token: str, backoff_ms: int) -> Plan[None]:
        """`_unlock_quietly` of several locks in one round trip (per node)."""
        effects = [
            package_script("cache_unlock").eval((self.lock_key(e),), (token, backoff_ms))
            for e in entries
        ]
        try:
            yield from _batch(effects)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("releasing recompute locks", exc)

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

    def get_or_load_many(
        self, keys: Iterable[Any], loader: Callable[[list[Any]], Any], ttl: Ttl | None
    ) -> Plan[list[Any]]:
        """`Cache.get_or_load_many`, whole: check the arguments, `read_or_load_many`, and the
        stale or early-expiring entries' refresh started in the background."""
        listed, entries = self._entries(keys)
        check_callable(loader, "loader", asynchronous=self.asynchronous)
        self.check_ttl(ttl)
        token = self.new_token()
        values, refresh = yield from self.read_or_load_many(listed, entries, loader, ttl, token)
        if refresh:
            yield from self._start(self.refresh_many(refresh, loader, ttl, token))
        return values

    def read_or_load_many(
        self,
        listed: list[Any],
        entries: list[bytes],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[tuple[list[Any], dict[bytes, Any]]]:
        """`get_or_load` for many keys: one read per node, one loader call for the misses.

        Each miss's recompute lock is taken in the same read; the keys whose lock this caller
        got are loaded together (``loader(keys) -> mapping``) and stored in one round trip
        per node; keys another process is loading are read again until it stored them (or
        ``wait_timeout``). Returns the values in the order asked and ``{entry: key}`` of the
        stale or early-expiring entries served whose lock this caller took: the facade
        refreshes those in the background.
        """
        key_of = dict(zip(entries, listed, strict=True))
        values: dict[bytes, Any] = {}
        for entry in key_of:
            value = self.near_get(entry)
            if value is not _MISSING:
                values[entry] = value
        pending = [e for e in key_of if e not in values]
        refresh: dict[bytes, Any] = {}
        near_generation = self.near.generation if self.near is not None else 0
        deadline: float | None = None
        pause = 0.01
        while pending:
            try:
                read = yield from self._read_many(pending, self.mode, token)
            except BackendError as exc:
                if not self.fail_open:
                    raise
                self.failed_open("get_or_load_many", exc)
                loaded = yield from self._call_many(loader, [key_of[e] for e in pending])
                values.update((e, loaded.get(key_of[e])) for e in pending)
                break
            load: dict[bytes, str] = {}
            waiting = []
            for entry in pending:
                status, raw, took, left, generation = read[entry]
                if status in (_FRESH, _EARLY, _STALE):
                    value = self._read(entry, raw)
                    if value is not _MISSING:
                        self._count("hits")
                        values[entry] = value
                        if status == _FRESH:
                            self._near_put(entry, raw, left, near_generation)
                        elif status == _STALE:
                            self._count("stale_served")
                        else:
                            self._count("early_refreshes")
                        if took:
                            refresh[entry] = key_of[entry]
                        continue
                    load[entry] = generation  # a foreign or corrupt entry: replace it
                elif took:
                    load[entry] = generation
                else:
                    waiting.append(entry)
            if load:
                self._count("misses", len(load))
                loaded_values = yield from self._load_many(load, key_of, loader, ttl, token)
                values.update(loaded_values)
            pending = waiting
            if not pending:
                break
            what = f"{pending[:3]!r}{'...' if len(pending) > 3 else ''}"
            deadline, pause = yield from self._wait_for_loader(deadline, pause, what)
        return [values.get(entry) for entry in entries], refresh

    def _call_many(
        self, loader: Callable[[list[Any]], Any], keys: list[Any]
    ) -> Plan[Mapping[Any, Any]]:
        loaded = yield Call(loader, (keys,))
        if not isinstance(loaded, Mapping):
            raise ConfigurationError(
                f"a get_or_load_many loader must return a mapping of key to value, not "
                f"{type(loaded).__name__}"
            )
        return loaded

    def _load_many(
        self,
        load: dict[bytes, str],
        key_of: dict[bytes, Any],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[dict[bytes, Any]]:
        """Load the entries whose lock we hold (one loader call) and store them conditionally."""
        started = yield Now()
        self._count("loads", len(load))
        try:
            loaded = yield from self._call_many(loader, [key_of[e] for e in load])
            values = {e: loaded.get(key_of[e]) for e in load}
            encoded: dict[bytes, tuple[str, bytes, int]] = {}
            for entry, value in values.items():
                if value is None and self.negative_ms is None:
                    continue
                soft = self.negative_ms if value is None else self.soft_ms(ttl, forever=True)
                tag, payload = self.encode_entry(value)
                encoded[entry] = (tag, payload, soft or 0)
        except BaseException as exc:
            failed = isinstance(exc, Exception) and not isinstance(exc, ConfigurationError)
            if failed:
                self._count("load_errors", len(load))
            yield from self._unlock_many(list(load), token, self.backoff_ms if failed else 0)
            raise
        finished = yield Now()
        if _metrics.on:
            _metrics.CACHE_LOAD_SECONDS.record(self._labels, finished - started)
        delta = max(0, round((finished - started) * 1000))
        # Entries the loader gave nothing for (or None, without negative_ttl) are not cached:
        # let their locks go at once.
        yield from self._unlock_many([e for e in load if e not in encoded], token, 0)
        try:
            if encoded:
                yield from self._store_many(encoded, token, load, delta)
        except BackendError as exc:
            if not self.fail_open:
                raise
            self.failed_open("storing loaded values", exc)
        return values

    def refresh_many(
        self,
        refresh: dict[bytes, Any],
        loader: Callable[[list[Any]], Any],
        ttl: Ttl | None,
        token: str,
    ) -> Plan[None]:
        """Reload stale or early-expiring entries in the background; on failure keep them."""
        self._count("refreshes", len(refresh))
        try:
            yield from self._load_many(dict.fromkeys(refresh, ""), refresh, loader, ttl, token)
        except Exception as exc:
            message = "refreshing %d cache keys failed (%r); the stale values stay in place"
            coalesced(log, ("refresh", type(exc)), message, len(refresh), exc)

    def warm(
        self,
        items: Mapping[Any, Any] | Iterable[Any],
        loader: Callable[..., Any] | None,
        ttl: Duration | None,
        batch_size: int,
        progress: Callable[[int, int], Any] | None,
    ) -> Plan[WarmResult]:
        if ttl is not None:
            duration_ms(ttl, "ttl")
        check_int(batch_size, "batch_size", minimum=1)
        if progress is not None and not callable(progress):
            raise ConfigurationError(f"progress must be callable, not {type(progress).__name__}")
        if loader is None:
            pairs = list(items.items() if isinstance(items, Mapping) else items)
            for pair in pairs:
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise ConfigurationError(
                        "warm() needs a mapping or (key, value) pairs, or keys with loader="
                    )
                self.entry_key(pair[0])
            keys = [k for k, _ in pairs]
        else:
            keys = list(items)
            for k in keys:
                self.entry_key(k)
            pairs = []
        total = len(keys)
        stored = skipped = done = 0
        token = "warm:" + self.new_token()  # stores only where no loader holds the lock
        for start in range(0, total, batch_size):
            batch_keys = keys[start : start + batch_size]
            if loader is None:
                batch = pairs[start : start + batch_size]
            else:
                loaded = yield Call(loader, (batch_keys,))
                if not isinstance(loaded, Mapping):
                    raise ConfigurationError(
                        f"warm loader must return a mapping of key to value, not "
                        f"{type(loaded).__name__}"
                    )
                batch = [(k, loaded[k]) for k in batch_keys if k in loaded]
            effects = []
            for k, v in batch:
                entry = self.entry_key(k)
                tag, payload = self.encode_entry(v)
                effects.append(self._set_eval(entry, payload, self.soft_ms(ttl), 0, token, tag=tag))
            replies = (yield Pipeline(tuple(effects))) if effects else []
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
                if reply == 1:
                    stored += 1
                else:
                    skipped += 1
            done += len(batch_keys)
            if progress is not None:
                yield Call(progress, (done, total))
        return WarmResult(stored, skipped)
