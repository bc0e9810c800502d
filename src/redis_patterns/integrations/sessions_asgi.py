"""ASGI `SessionMiddleware` (Starlette, FastAPI): server-side sessions in an `AsyncSessionStore`.

    app.add_middleware(SessionMiddleware, store=lambda: AsyncSessionStore(connect(asyncio=True)))

``request.session`` is a `RequestSession`: a mutable mapping with ``id``, ``user_id``,
``rotate(user_id=...)`` (call it at login) and ``destroy()`` (logout; ``clear()`` does the same).
``get_session(request)`` returns it typed, for ``mypy --strict`` apps (and as a FastAPI
dependency: ``Annotated[RequestSession, Depends(get_session)]``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._async.sessions import AsyncSessionStore
from .._errors import ConfigurationError
from ._sessions_common import (
    UNREACHABLE,
    UNTOUCHED,
    CookieSettings,
    OnBackendError,
    Outcome,
    RequestSession,
    check_on_backend_error,
    unreachable,
)

__all__ = ["RequestSession", "SessionMiddleware", "get_session"]

StoreFactory = Callable[[], AsyncSessionStore]


def get_session(request: HTTPConnection) -> RequestSession:
    """The request's session, typed (``request.session`` is typed ``dict[str, Any]``).

    Raises:
        ConfigurationError: the app is not wrapped in this module's `SessionMiddleware`.
    """
    session = request.scope.get("session")
    if not isinstance(session, RequestSession):
        raise ConfigurationError(
            "no redis-patterns session on this request: add"
            " redis_patterns.integrations.sessions_asgi.SessionMiddleware to the app"
        )
    return session


class SessionMiddleware:
    """Loads the session named by the cookie, and writes back only what the request changed.

    Args:
        app: the ASGI app to wrap.
        store: an `AsyncSessionStore`, or a function making one. A function is called once per
            event loop, inside it (an asyncio client belongs to the loop it was first used in,
            and test clients run each app on a loop of their own); the clients it made are
            closed at lifespan shutdown.
        cookie_name: the cookie's name (``__Host-`` is prepended when the prefix is on).
        secure: send the cookie over HTTPS only (turn off for local plain-HTTP development).
        samesite: ``"lax"`` (default), ``"strict"`` or ``"none"`` (needs ``secure``).
        path, domain: the cookie's scope; the defaults keep it to this exact host.
        host_prefix: use the ``__Host-`` prefix; ``None`` turns it on when ``secure``, ``path``
            is ``/`` and there is no ``domain`` (what the prefix requires).
        on_backend_error: when the server is unreachable or times out, ``"raise"`` (default:
            the request fails with `BackendUnavailableError` / `BackendTimeoutError`) or
            ``"anonymous"``: the request goes on with an empty anonymous session, nothing is
            written, the cookie is left alone, and one coalesced warning is logged.

    Raises:
        ConfigurationError: an invalid cookie setting (e.g. SameSite=None without Secure) or
            ``on_backend_error``.

    A request with a cookie costs one round trip before the app runs (read + sliding refresh);
    a request without one costs nothing until the app writes to the session. A forged,
    malformed or expired cookie yields a fresh, empty anonymous session (and is deleted).
    """

    def __init__(
        self,
        app: ASGIApp,
        store: AsyncSessionStore | StoreFactory,
        *,
        cookie_name: str = "session",
        secure: bool = True,
        samesite: str = "lax",
        path: str = "/",
        domain: str | None = None,
        host_prefix: bool | None = None,
        on_backend_error: OnBackendError = "raise",
    ) -> None:
        self.app = app
        self.anonymous_when_unreachable = check_on_backend_error(on_backend_error)
        self.cookie = CookieSettings.build(
            cookie_name,
            secure=secure,
            samesite=samesite,
            path=path,
            domain=domain,
            host_prefix=host_prefix,
        )
        self._store = store
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncSessionStore]
        self._per_loop = weakref.WeakKeyDictionary()

    def store(self) -> AsyncSessionStore:
        """The store for the running event loop."""
        if isinstance(self._store, AsyncSessionStore):
            return self._store
        loop = asyncio.get_running_loop()
        made = self._per_loop.get(loop)
        if made is None:
            made = self._per_loop[loop] = self._store()
        return made

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_on_shutdown(send))
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        store = self.store()
        cookie = HTTPConnection(scope).cookies.get(self.cookie.name)
        dumps = store._core.serializer.dumps
        try:
            loaded = await store.get(cookie) if cookie else None  # malformed: None, no I/O
        except UNREACHABLE as exc:
            if not self.anonymous_when_unreachable:
                raise
            unreachable(exc, "loading a session")
            session = RequestSession(None, dumps, degraded=True)
        else:
            session = RequestSession(loaded, dumps)
        scope["session"] = session

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome = await self._commit(store, session, cookie is not None)
                if outcome.touch_cookie:
                    headers = MutableHeaders(scope=message)
                    headers.append(
                        "Set-Cookie", self.cookie.header(outcome.sid or "", outcome.max_age)
                    )
                    headers.add_vary_header("Cookie")
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _commit(
        self, store: AsyncSessionStore, session: RequestSession, had_cookie: bool
    ) -> Outcome:
        changes = session._commit_changes(had_cookie)
        if changes is None:
            return UNTOUCHED  # the store was unreachable: nothing was loaded, nothing is written
        try:
            return await store.commit(changes)
        except UNREACHABLE as exc:
            if not self.anonymous_when_unreachable:
                raise
            unreachable(exc, "saving a session")
            return UNTOUCHED

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                loop = asyncio.get_running_loop()
                made = self._per_loop.pop(loop, None)
                if made is not None:
                    await made.client.aclose()
            await send(message)

        return wrapped
