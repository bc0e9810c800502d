"""`rate_limit`: a Flask view decorator answering 429 with ``Retry-After`` and ``RateLimit-*``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, make_response, request

from .._core.ratelimit import http_headers
from .._errors import BackendError, ConfigurationError
from .._logging import coalesced
from .._sync.ratelimit import RateLimiter
from .._validate import check_int
from .ratelimit_keys import EXEMPT, Exempt, limiter_key, normalize_key

__all__ = ["EXEMPT", "Exempt", "normalize_key", "rate_limit", "remote_addr"]

logger = logging.getLogger("redis_patterns.ratelimit")

F = TypeVar("F", bound=Callable[..., Any])


def remote_addr() -> str:
    """The client's address as Flask sees it (behind a proxy, configure ``ProxyFix``)."""
    return request.remote_addr or "unknown"


def rate_limit(
    limiter: RateLimiter,
    *,
    key: Callable[[], str | bytes | Exempt | None] = remote_addr,
    cost: int = 1,
    fail_open: bool = True,
) -> Callable[[F], F]:
    """Decorate a Flask view so that each call is one hit on ``limiter``.

    Refused calls return ``429 Too Many Requests`` with ``Retry-After`` and ``RateLimit-Limit``
    / ``RateLimit-Remaining`` / ``RateLimit-Reset``; admitted ones carry the ``RateLimit-*``
    headers too. ``key()`` runs inside the request (use ``flask.request`` / ``flask.g``). The
    key is client input, so it is never refused: a key the limiter would not accept is
    replaced by its SHA-256 (`normalize_key`). ``None`` or an empty value means "unknown
    caller": the client address is limited instead. Only `EXEMPT` exempts the request.

    Args:
        limiter: any sync `RateLimiter` (including `MultiLimit`).
        key: who is limited: the client address by default; e.g. an API key or a user id.
            Returns str, bytes, ``None`` (use the client address) or `EXEMPT`.
        cost: units each call consumes.
        fail_open: when the server cannot be reached or fails, run the view anyway (True,
            the default) or answer ``503`` (False); either way the failure is logged.

    Raises:
        TypeError: ``limiter`` is not a sync `RateLimiter`.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit.
    """
    if not isinstance(limiter, RateLimiter):
        raise TypeError(f"limiter must be a (sync) RateLimiter, not {type(limiter).__name__}")
    if check_int(cost, "cost", minimum=1) > limiter.limit:
        raise ConfigurationError(f"cost {cost} exceeds the limiter's limit {limiter.limit}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            who = limiter_key(key(), remote_addr)
            if who is None:
                return make_response(view(*args, **kwargs))
            try:
                decision = limiter.hit(who, cost)
            except BackendError as exc:
                coalesced(
                    logger,
                    ("unavailable", fail_open, type(exc)),
                    "rate limiter unavailable, failing %s: %s: %s",
                    "open" if fail_open else "closed",
                    type(exc).__name__,
                    exc,
                )
                if fail_open:
                    return make_response(view(*args, **kwargs))
                return Response("Rate limiter unavailable", 503, {"Retry-After": "1"})
            headers = http_headers(decision)
            if not decision.allowed:
                return Response("Too Many Requests", 429, headers)
            response = make_response(view(*args, **kwargs))
            for name, value in headers.items():
                response.headers.setdefault(name, value)
            return response

        return wrapper  # type: ignore[return-value]

    return decorate
