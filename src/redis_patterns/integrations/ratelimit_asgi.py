"""`RateLimitMiddleware`: rate limiting for any ASGI app (Starlette, FastAPI), 429 with headers."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._async.ratelimit import AsyncRateLimiter
from .._core.ratelimit import http_headers
from .._errors import BackendError, ConfigurationError
from .._logging import coalesced
from .._validate import check_int
from .ratelimit_keys import EXEMPT, Exempt, limiter_key, normalize_key

__all__ = ["EXEMPT", "Exempt", "KeyFunc", "RateLimitMiddleware", "client_ip", "normalize_key"]

logger = logging.getLogger("redis_patterns.ratelimit")

KeyResult = str | bytes | Exempt | None
KeyFunc = Callable[[HTTPConnection], "KeyResult | Awaitable[KeyResult]"]


def client_ip(conn: HTTPConnection) -> str:
    """The peer address of the connection (behind a proxy, use a key function you trust)."""
    return conn.client.host if conn.client is not None else "unknown"


class RateLimitMiddleware:
    """Limit every HTTP request with ``limiter``, keyed by ``key(request)``.

    Refused requests get ``429 Too Many Requests`` with ``Retry-After`` and ``RateLimit-Limit``
    / ``RateLimit-Remaining`` / ``RateLimit-Reset``; admitted ones get the ``RateLimit-*``
    headers too. The key is client input, so it is never refused: a key the limiter would not
    accept is replaced by its SHA-256 (`normalize_key`). A key function returning ``None`` or
    an empty value means "unknown caller": the client address is limited instead. Only
    `EXEMPT` exempts the request.

    The limiter's asyncio client is used from the server's event loop; create it at start-up
    (or in the app's lifespan) and close it at shutdown. With Starlette's ``TestClient``, use
    ``with TestClient(app) as client:`` so that every request runs on one loop.

    Args:
        app: the ASGI app to protect.
        limiter: any `AsyncRateLimiter` (including `AsyncMultiLimit`).
        key: who is limited: the client IP by default; e.g. an API key or a user id. May
            be async; returns str, bytes, ``None`` (use the client IP) or `EXEMPT`.
        cost: units each request consumes.
        fail_open: when the server cannot be reached or fails, let requests through (True,
            the default) or answer ``503`` (False). Either way the failure is logged (without
            the key, which may be a credential).

    Raises:
        TypeError: ``limiter`` is not an `AsyncRateLimiter`.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: AsyncRateLimiter,
        *,
        key: KeyFunc = client_ip,
        cost: int = 1,
        fail_open: bool = True,
    ) -> None:
        if not isinstance(limiter, AsyncRateLimiter):
            raise TypeError(f"limiter must be an AsyncRateLimiter, not {type(limiter).__name__}")
        if check_int(cost, "cost", minimum=1) > limiter.limit:
            raise ConfigurationError(f"cost {cost} exceeds the limiter's limit {limiter.limit}")
        self.app = app
        self.limiter = limiter
        self.key = key
        self.cost = cost
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        who = self.key(conn)
        if inspect.isawaitable(who):
            who = await who
        key = limiter_key(who, lambda: client_ip(conn))
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            decision = await self.limiter.hit(key, self.cost)
        except BackendError as exc:
            coalesced(
                logger,
                ("unavailable", self.fail_open, type(exc)),
                "rate limiter unavailable, failing %s: %s: %s",
                "open" if self.fail_open else "closed",
                type(exc).__name__,
                exc,
            )
            if self.fail_open:
                await self.app(scope, receive, send)
                return
            response = PlainTextResponse(
                "Rate limiter unavailable", status_code=503, headers={"Retry-After": "1"}
            )
            await response(scope, receive, send)
            return
        headers = http_headers(decision)
        if not decision.allowed:
            await PlainTextResponse("Too Many Requests", 429, headers)(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
