"""`rate_limit`: a Flask view decorator answering 429 with ``Retry-After`` and ``RateLimit-*``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, make_response, request

from .._sync.ratelimit import RateLimiter
from ._ratelimit_guard import Guard
from .ratelimit_http import HeaderStyle, OnRefused, plain_text
from .ratelimit_keys import EXEMPT, Exempt, limiter_key, normalize_key

__all__ = [
    "EXEMPT",
    "Exempt",
    "normalize_key",
    "rate_limit",
    "remote_addr",
]

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
    headers: HeaderStyle = "legacy",
    on_refused: OnRefused = plain_text,
) -> Callable[[F], F]:
    """Decorate a Flask view so that each call is one hit on ``limiter``.

    Refused calls return ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit
    headers; admitted ones carry the rate-limit headers too. ``key()`` runs inside the request
    (use ``flask.request`` / ``flask.g``). The key is client input, so it is never refused: a
    key the limiter would not accept is replaced by its SHA-256 (`normalize_key`). ``None`` or
    an empty value means "unknown caller": the client address is limited instead. Only
    `EXEMPT` exempts the request.

    Args:
        limiter: any sync `RateLimiter` (including `MultiLimit`).
        key: who is limited: the client address by default; e.g. an API key or a user id.
            Returns str, bytes, ``None`` (use the client address) or `EXEMPT`.
        cost: units each call consumes.
        fail_open: when the server cannot be reached or fails, run the view anyway (True,
            the default) or answer ``503`` (False); either way the failure is logged.
        headers: ``"legacy"`` (``RateLimit-Limit/-Remaining/-Reset``, the default),
            ``"draft"`` (the IETF draft's ``RateLimit`` and ``RateLimit-Policy``) or ``"both"``.
        on_refused: shapes the 429 / 503 body: `plain_text` (default), `json_error`,
            `problem_json` (RFC 9457) or your own ``(Refusal) -> RefusalResponse``.

    Raises:
        TypeError: ``limiter`` is not a sync `RateLimiter`.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit, or an
            unknown header style.
    """
    guard = Guard(limiter, cost=cost, fail_open=fail_open, headers=headers, on_refused=on_refused)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            verdict = guard.check(limiter_key(key(), remote_addr))
            if verdict.refusal is not None:
                refused = verdict.refusal
                return Response(
                    refused.body,
                    refused.status,
                    dict(refused.headers),
                    content_type=refused.content_type,
                )
            response = make_response(view(*args, **kwargs))
            for name, value in verdict.headers.items():
                response.headers.setdefault(name, value)
            return response

        return wrapper  # type: ignore[return-value]

    return decorate
