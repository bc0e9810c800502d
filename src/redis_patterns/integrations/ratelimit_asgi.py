"""Rate limits for ASGI apps: `RateLimitMiddleware` (app, mount or route) and `RateLimit`, a
FastAPI dependency; both answer 429 with ``Retry-After`` and the rate-limit headers."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._async.ratelimit import AsyncRateLimiter
from .._core.ratelimit import Decision
from ._ratelimit_guard import AsyncGuard, Paths, Verdict, logger
from .ratelimit_http import HeaderStyle, OnRefused, RefusalResponse, plain_text
from .ratelimit_keys import EXEMPT, Exempt, limiter_key, normalize_key

__all__ = [
    "EXEMPT",
    "Exempt",
    "KeyFunc",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "client_ip",
    "normalize_key",
    "rate_limit_exceeded_handler",
]

KeyResult = str | bytes | Exempt | None
KeyFunc = Callable[[HTTPConnection], "KeyResult | Awaitable[KeyResult]"]


def client_ip(conn: HTTPConnection) -> str:
    """The peer address of the connection (behind a proxy, use a key function you trust)."""
    return conn.client.host if conn.client is not None else "unknown"


async def _verdict(guard: AsyncGuard, key: KeyFunc, conn: HTTPConnection) -> Verdict:
    who = key(conn)
    if inspect.isawaitable(who):
        who = await who
    return await guard.check(limiter_key(who, lambda: client_ip(conn)))


def _response(refusal: RefusalResponse) -> Response:
    return Response(
        refusal.body, refusal.status, dict(refusal.headers), media_type=refusal.content_type
    )


class RateLimitMiddleware:
    """Limit HTTP requests with ``limiter``, keyed by ``key(request)``.

    Refused requests get ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit
    headers; admitted ones get the rate-limit headers too. The key is client input, so it is
    never refused: a key the limiter would not accept is replaced by its SHA-256
    (`normalize_key`). A key function returning ``None`` or an empty value means "unknown
    caller": the client address is limited instead. Only `EXEMPT` exempts the request.

    Add it to the app (``app.add_middleware``; the last added runs first, so add it after a
    session middleware to refuse before the session is loaded), scope it with ``paths``, or
    give one route or mount its own limit with Starlette's
    ``Route(..., middleware=[Middleware(RateLimitMiddleware, limiter=...)])``.

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
        headers: ``"legacy"`` (``RateLimit-Limit/-Remaining/-Reset``, the default),
            ``"draft"`` (the IETF draft's ``RateLimit`` and ``RateLimit-Policy``) or ``"both"``.
        on_refused: shapes the 429 / 503 body: `plain_text` (default), `json_error`,
            `problem_json` (RFC 9457) or your own ``(Refusal) -> RefusalResponse``.
        paths: limit only requests whose path is one of these prefixes (on ``/`` boundaries:
            ``"/api"`` is ``/api`` and ``/api/...``); ``None``, the default: every request.

    Raises:
        TypeError: ``limiter`` is not an `AsyncRateLimiter`.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit, an unknown
            header style, or a bad path prefix.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: AsyncRateLimiter,
        *,
        key: KeyFunc = client_ip,
        cost: int = 1,
        fail_open: bool = True,
        headers: HeaderStyle = "legacy",
        on_refused: OnRefused = plain_text,
        paths: Collection[str] | None = None,
    ) -> None:
        self.guard = AsyncGuard(
            limiter, cost=cost, fail_open=fail_open, headers=headers, on_refused=on_refused
        )
        self.app = app
        self.key = key
        self.paths = Paths(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        verdict = await _verdict(self.guard, self.key, HTTPConnection(scope))
        if verdict.refusal is not None:
            await _response(verdict.refusal)(scope, receive, send)
            return
        if not verdict.headers:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                # the app's own (or an inner limit's) headers win, as in Flask and Django
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimitExceeded(HTTPException):
    """Raised by the `RateLimit` dependency for a refused request (429, or 503 fail closed).

    An ``HTTPException``: without a handler, FastAPI answers with its own error body
    (``{"detail": "Too Many Requests"}``) and this exception's status and headers. Register
    `rate_limit_exceeded_handler` to send the ``on_refused`` body instead.

    Attributes:
        response: the response ``on_refused`` shaped.
    """

    def __init__(self, response: RefusalResponse) -> None:
        detail = "Too Many Requests" if response.status == 429 else "Rate limiter unavailable"
        super().__init__(response.status, detail, dict(response.headers))
        self.response = response


async def rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """FastAPI / Starlette exception handler sending a `RateLimitExceeded`'s shaped response.

    ``app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)``
    """
    if not isinstance(exc, RateLimitExceeded):
        raise TypeError(f"expected RateLimitExceeded, got {type(exc).__name__}")
    return _response(exc.response)


class RateLimit:
    """A FastAPI dependency limiting the route(s) it guards: ``Depends(RateLimit(limiter))``.

    Put it on one path operation (``dependencies=[Depends(login_limit)]``, or as a parameter
    ``decision: Annotated[Decision | None, Depends(login_limit)]`` to read the decision), on an
    ``APIRouter``, or on the app. Admitted requests get the rate-limit headers on the response
    (through FastAPI's ``Response`` parameter, so on endpoints returning data, not their own
    ``Response`` object: such an endpoint adds `rate_limit_headers` itself); refused ones raise
    `RateLimitExceeded`. Keys, ``cost``, ``fail_open``, ``headers`` and ``on_refused`` as for
    `RateLimitMiddleware`.

    A dependency runs after every middleware, a session middleware included; to refuse before
    a session is loaded, use `RateLimitMiddleware` with ``paths``, added after it.

    The same instance used twice for one request (say, on the router and as a parameter) is
    one hit: FastAPI solves a dependency once per request.

    Raises:
        TypeError: ``limiter`` is not an `AsyncRateLimiter`.
        ConfigurationError: as `RateLimitMiddleware`.
    """

    def __init__(
        self,
        limiter: AsyncRateLimiter,
        *,
        key: KeyFunc = client_ip,
        cost: int = 1,
        fail_open: bool = True,
        headers: HeaderStyle = "legacy",
        on_refused: OnRefused | None = None,
    ) -> None:
        self.guard = AsyncGuard(
            limiter,
            cost=cost,
            fail_open=fail_open,
            headers=headers,
            on_refused=plain_text if on_refused is None else on_refused,
        )
        self.key = key
        self._check_handler = on_refused is not None

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        verdict = await _verdict(self.guard, self.key, request)
        if verdict.refusal is not None:
            if self._check_handler:
                self._warn_without_handler(request)
            raise RateLimitExceeded(verdict.refusal)
        response.headers.update(verdict.headers)
        return verdict.decision

    def _warn_without_handler(self, request: Request) -> None:
        handlers = getattr(request.app, "exception_handlers", None)
        if handlers is not None and RateLimitExceeded not in handlers:
            self._check_handler = False  # once per dependency
            logger.warning(
                "RateLimit(on_refused=...) is not used: the app has no handler for "
                "RateLimitExceeded (add rate_limit_exceeded_handler)"
            )
