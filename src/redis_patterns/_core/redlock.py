"""Redlock's logic: the lease on a majority of N independent servers, as plans."""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigurationError, LockNotOwnedError
from .._keys import make_key
from .._plan import Command, Eval, Gather, Now, Plan, Sleep
from .._script import package_script
from .._validate import check_int, check_number, duration_ms
from .backoff import backoff_delay
from .lock import Acquired, LeaseCore, as_text

__all__ = ["CLOCK_SLACK", "EPOCH_KEY", "RedlockCore"]

# Added to the drift allowance: the granularity of server-side expiry (about 1 ms) plus one.
CLOCK_SLACK = 0.002
MIN_NODES = 3


# Per server, not per lock: vanishes only when the server loses its data (see restart_guard).
EPOCH_KEY = make_key("redlock", b"epoch")


def _grant_ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK", 1)


class RedlockCore(LeaseCore):
    """State and plans shared by `Redlock` and `AsyncRedlock`; the owner is this object."""

    __slots__ = (
        "drift_factor",
        "node_timeout",
        "nodes",
        "quorum",
        "restart_guard_ms",
        "retries",
        "retry_delay",
    )

    _what = "Redlock"

    def __init__(
        self,
        addresses: Sequence[str],
        name: str | bytes,
        ttl: object,
        drift_factor: object,
        retries: object,
        retry_delay: object,
        node_timeout: object,
        timeout: object,
        restart_guard: object = None,
        auto_renew: object = False,
        on_lost: object = None,
    ) -> None:
        if len(addresses) < MIN_NODES:
            raise ConfigurationError(
                f"Redlock needs at least {MIN_NODES} independent servers, got {len(addresses)}"
            )
        duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
        if duplicates:
            raise ConfigurationError(
                f"Redlock servers must be distinct; repeated: {', '.join(duplicates)} (several "
                "databases of one server are one point of failure, not several)"
            )
        self.nodes = len(addresses)
        self.quorum = self.nodes // 2 + 1
        super().__init__(name, ttl, timeout, auto_renew, on_lost)
        self.drift_factor = float(
            check_number(drift_factor, "drift_factor", minimum=0, maximum=0.1)
        )
        self.retries = check_int(retries, "retries", minimum=0)
        self.retry_delay = duration_ms(retry_delay, "retry_delay") / 1000
        if node_timeout is None:
            # Well under ttl / N, so that even N slow replies cannot eat the whole lease.
            self.node_timeout = min(0.5, self.ttl_ms / 1000 / (2 * self.nodes))
        else:
            self.node_timeout = duration_ms(node_timeout, "node_timeout") / 1000
            if self.node_timeout >= self.ttl_ms / 1000 / self.nodes:
                raise ConfigurationError(
                    f"node_timeout must be < ttl / N = {self.ttl_ms / 1000 / self.nodes:g} s, "
                    f"got {node_timeout!r}"
                )
        self.restart_guard_ms = (
            None if restart_guard is None else duration_ms(restart_guard, "restart_guard")
        )
        if self.restart_guard_ms is not None and self.restart_guard_ms < self.ttl_ms:
            raise ConfigurationError(
                f"restart_guard must be >= ttl ({self.ttl_ms / 1000:g} s), got {restart_guard!r}"
            )

    def drift(self, ttl_ms: int) -> float:
        return ttl_ms / 1000 * self.drift_factor + CLOCK_SLACK

    def _fan_out(self, make: Any) -> Gather:
        return Gather(tuple(make(i) for i in range(self.nodes)), timeout=self.node_timeout)

    def acquire(self, blocking: object = True, timeout: object = None) -> Plan[Acquired]:
        """Up to ``retries + 1`` attempts (one unless ``blocking``); checks before any I/O."""
        wait = self._check_acquire(blocking, timeout)
        token = secrets.token_hex(16)
        ttl = self.ttl_ms / 1000
        started = yield Now()
        deadline = None if wait is None else started + wait
        attempts = self.retries + 1 if blocking else 1
        rng: random.Random | None = None  # only a retry needs one
        for attempt in range(attempts):
            sent_at = yield Now()
            replies = yield self._fan_out(lambda i: self._grant(token, i))
            done_at = yield Now()
            granted = sum(1 for reply in replies if _grant_ok(reply))
            validity = ttl - (done_at - sent_at) - self.drift(self.ttl_ms)
            if granted >= self.quorum and validity > 0:
                self._granted(
                    token, done_at + validity, validity=validity, started=started, at=sent_at
                )
                return Acquired(True, self.renew_interval if self.auto_renew else None)
            # Failed: undo on every node, including those that refused or did not answer.
            yield from self._unlock_all(token)
            if attempt == attempts - 1:
                break
            now = yield Now()
            if deadline is not None and now >= deadline:
                break
            if rng is None:
                rng = random.Random()
            # Capped at its base, so it does not grow: random in [retry_delay / 2, retry_delay].
            delay = backoff_delay(
                attempt, self.retry_delay, self.retry_delay, rng=rng, low=self.retry_delay / 2
            )
            yield Sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))
        self._not_acquired()
        return Acquired(False)

    def _grant(self, token: str, node: int) -> Command | Eval:
        if self.restart_guard_ms is None:
            return Command(("SET", self.key, token, "NX", "PX", self.ttl_ms), node=node)
        keys = (self.key, EPOCH_KEY)
        args = (token, self.ttl_ms, self.restart_guard_ms)
        return Eval(package_script("redlock_acquire"), keys, args, node=node)

    def _unlock_all(self, token: str) -> Plan[int]:
        script = package_script("lock_release")
        replies = yield self._fan_out(lambda i: Eval(script, (self.key,), (token,), node=i))
        return sum(1 for reply in replies if not isinstance(reply, BaseException) and reply == 1)

    def release(self) -> Plan[None]:
        token = self._start_release()
        now = yield Now()
        deleted = yield from self._unlock_all(token)
        expired = self._valid_until is not None and now >= self._valid_until
        self._released(now)
        if deleted < self.quorum or expired:
            raise LockNotOwnedError(
                f"Redlock {self.name!r} was no longer held at release: our token was on "
                f"{deleted} of {self.nodes} servers (quorum {self.quorum})"
                + ("; its validity had run out" if expired else "")
            )

    def extend(self, ttl: object = None) -> Plan[None]:
        """Extend on every server holding our token; checks before any I/O."""
        token, ttl_ms = self._check_extend(ttl)
        extended = yield from self._extend(token, ttl_ms)
        if extended is not None:
            raise LockNotOwnedError(
                f"Redlock {self.name!r} extended on {extended} of {self.nodes} servers only "
                f"(quorum {self.quorum}) or too late; it is released everywhere"
            )

    def _extend(self, token: str, ttl_ms: int) -> Plan[int | None]:
        """Extend on every server; ``None`` on success, else how many servers extended (the
        lock is then marked lost and released everywhere)."""
        generation = self._generation
        script = package_script("lock_extend")
        sent_at = yield Now()
        if self._valid_until is not None and sent_at >= self._valid_until:
            replies: list[Any] = []  # too late: a majority may already have expired it
        else:
            replies = yield self._fan_out(
                lambda i: Eval(script, (self.key,), (token, ttl_ms), node=i)
            )
        done_at = yield Now()
        if generation != self._generation:
            return None  # released meanwhile (a watchdog tick racing with release)
        extended = sum(1 for r in replies if not isinstance(r, BaseException) and r == 1)
        validity = ttl_ms / 1000 - (done_at - sent_at) - self.drift(ttl_ms)
        if extended < self.quorum or validity <= 0:
            self._lose(forget=True)
            yield from self._unlock_all(token)
            return extended
        self._renewed(done_at + validity, validity)
        return None

    def renew(self) -> Plan[float | None]:
        """One watchdog tick; the delay to the next, or ``None`` to stop."""
        if not self._held or self._lost or self._token is None:
            return None
        yield from self._extend(self._token, self.ttl_ms)
        return None if self._lost or not self._held else self.renew_interval

    def locked(self) -> Plan[bool]:
        replies = yield self._fan_out(lambda i: Command(("EXISTS", self.key), node=i))
        held = sum(1 for r in replies if not isinstance(r, BaseException) and int(r) == 1)
        return held >= self.quorum

    def owned(self) -> Plan[bool]:
        if not self._held or self._token is None:
            return False
        replies = yield self._fan_out(lambda i: Command(("GET", self.key), node=i))
        now = yield Now()
        ours = sum(1 for r in replies if as_text(r) == self._token)
        return ours >= self.quorum and self._valid_until is not None and now < self._valid_until

    def ttl(self) -> Plan[float | None]:
        replies = yield self._fan_out(lambda i: Command(("PTTL", self.key), node=i))
        pttls = sorted(
            (int(r) for r in replies if not isinstance(r, BaseException) and int(r) != -2),
            reverse=True,
        )
        if len(pttls) < self.quorum:
            return None
        # The time for which a majority of servers still hold the key.
        value = pttls[self.quorum - 1]
        return math.inf if value == -1 else value / 1000

    def verify_servers(self) -> Plan[None]:
        """Ask every server its ``run_id`` (``INFO server``); two alike are one server."""
        replies = yield self._fan_out(lambda i: Command(("INFO", "server"), node=i))
        ids: list[str] = []
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                raise reply
            run_id = reply.get("run_id") if isinstance(reply, dict) else None
            ids.append(str(run_id) if run_id is not None else f"node {i}")
        if len(set(ids)) != len(ids):
            raise ConfigurationError(f"Redlock clients reach the same server twice: {ids}")
