"""The one decision flow of every rate-limit integration: hit, fail open or closed, answer.

A framework integration finds the key (`ratelimit_keys.limiter_key`), asks a `Guard` or an
`AsyncGuard` for a `Verdict`, and renders it: either the `RefusalResponse` to send instead of
running the app, or the headers to add to the app's response.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Generic, TypeVar

from .._async.ratelimit import AsyncMultiLimit, AsyncRateLimiter
from .._core.ratelimit import Decision, combine
from .._errors import BackendError, ConfigurationError
from .._logging import coalesced
from .._sync.ratelimit import MultiLimit, RateLimiter
from .._validate import check_int
from .ratelimit_http import (
    OnRefused,
    Refusal,
    RefusalResponse,
    check_header_style,
    plain_text,
    policy_names,
    rate_limit_headers,
)

__all__ = ["AsyncGuard", "Guard", "Paths", "Verdict"]

logger = logging.getLogger("redis_patterns.ratelimit")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one request.

    Attributes:
        refusal: send this response instead of running the app (``None``: run it).
        headers: add these to the app's response (empty when exempt or failed open).
        decision: the limiter's binding decision (``None`` when exempt or unavailable).
    """

    refusal: RefusalResponse | None = None
    headers: dict[str, str] = field(default_factory=dict)
    decision: Decision | None = None


PASS = Verdict()


L = TypeVar("L", RateLimiter, AsyncRateLimiter)


class _Guard(Generic[L]):
    """Options checked once, and what a decision or a failure makes of the request."""

    __slots__ = ("_names", "cost", "fail_open", "limiter", "on_refused", "style")
    _kind: ClassVar[type[RateLimiter] | type[AsyncRateLimiter]]
    _kind_name: ClassVar[str]

    def __init__(
        self,
        limiter: L,
        *,
        cost: int = 1,
        fail_open: bool = True,
        headers: object = "legacy",
        on_refused: OnRefused = plain_text,
    ) -> None:
        if not isinstance(limiter, self._kind):
            raise TypeError(f"limiter must be {self._kind_name}, not {type(limiter).__name__}")
        if check_int(cost, "cost", minimum=1) > limiter.limit:
            raise ConfigurationError(f"cost {cost} exceeds the limiter's limit {limiter.limit}")
        if not callable(on_refused):
            raise TypeError(f"on_refused must be callable, not {type(on_refused).__name__}")
        self.limiter: L = limiter
        self.cost = cost
        self.fail_open = bool(fail_open)
        self.style = check_header_style(headers, limiter)
        self.on_refused = on_refused
        self._names = _names(limiter)

    def _refuse(self, refusal: Refusal) -> RefusalResponse:
        response = self.on_refused(refusal)
        if not isinstance(response, RefusalResponse):
            raise TypeError(
                f"on_refused must return a RefusalResponse, not {type(response).__name__}"
            )
        return replace(response, headers={**refusal.headers, **response.headers})

    def _decided(self, found: Decision | Sequence[Decision]) -> Verdict:
        headers = rate_limit_headers(self.limiter, found, style=self.style)
        decisions = [found] if isinstance(found, Decision) else list(found)
        decision = combine(decisions)
        if decision.allowed:
            return Verdict(headers=headers, decision=decision)
        violated = tuple(n for n, d in zip(self._names, decisions, strict=False) if not d.allowed)
        refusal = Refusal(429, int(headers["Retry-After"]), headers, decision, violated)
        return Verdict(refusal=self._refuse(refusal), decision=decision)

    def _failed(self, exc: BackendError) -> Verdict:
        coalesced(
            logger,
            ("unavailable", self.fail_open, type(exc)),
            "rate limiter unavailable, failing %s: %s: %s",
            "open" if self.fail_open else "closed",
            type(exc).__name__,
            exc,
        )
        if self.fail_open:
            return PASS
        return Verdict(refusal=self._refuse(Refusal(503, 1, {"Retry-After": "1"})))


def _names(limiter: RateLimiter | AsyncRateLimiter) -> tuple[str, ...]:
    """The limits' draft names for `Refusal.violated`; positional where one cannot be a header
    name (the legacy style allows any limit name, and only the hook sees these)."""
    try:
        return policy_names(limiter)
    except ConfigurationError:
        count = len(limiter.policies)
        return ("default",) if count == 1 else tuple(f"limit-{i}" for i in range(1, count + 1))


class Guard(_Guard[RateLimiter]):
    """The flow for a sync `RateLimiter` (Flask, Django's sync views and middleware).

    Raises:
        TypeError: ``limiter`` is not a sync `RateLimiter`, or ``on_refused`` not callable.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit, or an
            unknown header style.
    """

    __slots__ = ()
    _kind = RateLimiter
    _kind_name = "a (sync) RateLimiter"

    def check(self, key: bytes | None) -> Verdict:
        """One hit for ``key`` (``None``: exempt, nothing is sent)."""
        if key is None:
            return PASS
        try:
            if isinstance(self.limiter, MultiLimit):
                return self._decided(self.limiter.hit_all(key, self.cost))
            return self._decided(self.limiter.hit(key, self.cost))
        except BackendError as exc:
            return self._failed(exc)


class AsyncGuard(_Guard[AsyncRateLimiter]):
    """The flow for an `AsyncRateLimiter` (ASGI, FastAPI, Django's async views).

    Raises:
        TypeError: ``limiter`` is not an `AsyncRateLimiter`, or ``on_refused`` not callable.
        ConfigurationError: as `Guard`.
    """

    __slots__ = ()
    _kind = AsyncRateLimiter
    _kind_name = "an AsyncRateLimiter"

    async def check(self, key: bytes | None) -> Verdict:
        """One hit for ``key`` (``None``: exempt, nothing is sent)."""
        if key is None:
            return PASS
        try:
            if isinstance(self.limiter, AsyncMultiLimit):
                return self._decided(await self.limiter.hit_all(key, self.cost))
            return self._decided(await self.limiter.hit(key, self.cost))
        except BackendError as exc:
            return self._failed(exc)


class Paths:
    """Which request paths a path-scoped middleware limits: prefixes on ``/`` boundaries.

    ``Paths(["/api"])`` matches ``/api`` and ``/api/users``, not ``/apix``; ``None`` matches
    every path.

    Raises:
        ConfigurationError: a prefix that is not a str starting with ``/``, or no prefix.
        TypeError: ``paths`` is a single str (pass a list).
    """

    __slots__ = ("_prefixes",)

    def __init__(self, paths: Collection[str] | None) -> None:
        if paths is None:
            self._prefixes: tuple[str, ...] | None = None
            return
        if isinstance(paths, str | bytes):
            raise TypeError("paths must be a collection of path prefixes, not one string")
        prefixes = tuple(paths)
        if not prefixes:
            raise ConfigurationError("paths must name at least one prefix (None: every path)")
        for prefix in prefixes:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ConfigurationError(f"a path prefix must be a str starting with /: {prefix!r}")
        self._prefixes = tuple(p.rstrip("/") for p in prefixes)

    def __contains__(self, path: str) -> bool:
        if self._prefixes is None:
            return True
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self._prefixes)
