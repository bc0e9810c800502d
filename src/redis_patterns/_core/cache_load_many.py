"""The cache's bulk loading plans: get_or_load_many (one loader per batch across processes),
their background refreshes, warming."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import _metrics
from .._errors import BackendError, ConfigurationError
from .._logging import coalesced
from .._plan import Call, Command, Now, Pipeline, Plan, raise_first
from .._script import package_script
from .._validate import Duration, check_int, duration_ms
from .cache_keys import (
    _EARLY,
    _FRESH,
    _MISSING,
    _MODES,
    _STALE,
    _batch,
    _server_ms,
    _text,
)
from .cache_load import CacheLoads
from .cache_types import Ttl, WarmResult, check_callable

__all__ = ["CacheManyLoads"]

log = logging.getLogger("redis_patterns.cache")


class CacheManyLoads(CacheLoads):
    """The bulk plans that read and load: `get_or_load_many`, `warm`."""

    def _read_many(
        self,
        entries: list[bytes],
        mode: int,
        token: str,
        rs: Mapping[bytes, float] | None = None,
    ) -> Plan[dict[bytes, tuple[int, Any, int, int, str]]]:
        """``{entry: (status, raw, took, left, generation)}`` for distinct ``entries``, by the
        read script (``rs``: xfetch's draws, made here if not given)."""
        batches = self._batches(entries)
        effects = []
        for batch in batches:
            if rs is None:
                draws = [1.0 - self._rng.random() for _ in batch]
            else:
                draws = [rs[entry] for entry in batch]
            effects.append(
                package_script("cache_get_many").eval(
                    self._many_keys(batch), (mode, token, self.lock_ttl_ms, self.beta, *draws)
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

    def _lean_many(
        self, wanted: list[bytes], rs: Mapping[bytes, float] | None = None
    ) -> Plan[dict[bytes, tuple[int, Any, int, int, str]]]:
        """`lean_read` for many keys: one ``MGET`` (generation first) per batch and one
        ``TIME``, all in one round trip, each entry judged as the read script would (with
        ``rs``, xfetch's draws: an early refresh is `_EARLY`); the values never pass through
        Lua. The shape of `_read_many`'s answer, with no lock taken."""
        batches = self._batches(wanted)
        mgets = [Command(("MGET", self.gen_key(b[0]), *b)) for b in batches]
        *replies, clock = raise_first((yield Pipeline((*mgets, Command(("TIME",))))))
        now = _server_ms(clock)
        out: dict[bytes, tuple[int, Any, int, int, str]] = {}
        for batch, reply in zip(batches, replies, strict=True):
            generation = reply[0] or b"0"
            for entry, raw in zip(batch, reply[1:], strict=True):
                r = None if rs is None else rs[entry]
                status, left = self.judge(raw, generation, now, r)
                out[entry] = (status, raw, 0, left, _text(generation))
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
        replies = yield from self._write_batch(encoded, effects)
        stored: dict[bytes, bool] = {}
        for batch, reply in zip(batches, replies, strict=True):
            for entry, flag in zip(batch, reply, strict=True):
                stored[entry] = bool(flag)
        return stored

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
        # Fresh hits are judged here (`_lean_many`, as `read_or_load` does for one key): only
        # the misses, stale entries and early refreshes go on to the script, which takes their
        # recompute locks on the same xfetch draws.
        lean = self.lean_hits
        rs = None
        if lean and self.mode == _MODES["xfetch"]:
            rs = {entry: 1.0 - self._rng.random() for entry in pending}
        while pending:
            try:
                if lean:
                    lean = False
                    read = yield from self._lean_many(pending, rs)
                    rest = [e for e in pending if read[e][0] != _FRESH]
                    if rest:
                        read.update((yield from self._read_many(rest, self.mode, token, rs)))
                else:
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
