"""ASGI `SessionMiddleware` (Starlette, FastAPI): server-side sessions in an `AsyncSessionStore`.

    app.add_middleware(SessionMiddleware, store=lambda: AsyncSessionStore(connect(asyncio=True)))

``request.session`` is a `RequestSession`: a mutable mapping with ``id``, ``user_id``,
``rotate(user_id=...)`` (call it at login) and ``destroy()`` (logout; ``clear()`` does the same).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._async.sessions import AsyncSessionStore
from ._sessions_common import CookieSettings, Outcome, RequestSession, commit

__all__ = ["RequestSession", "SessionMiddleware"]

StoreFactory = Callable[[], AsyncSessionStore]


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

    Raises:
        ConfigurationError: an invalid cookie setting (e.g. SameSite=None without Secure).

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
    ) -> None:
        self.app = app
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
        loaded = await store.get(cookie) if cookie else None  # malformed: None, no I/O
        session = RequestSession(loaded, store._core.serializer.dumps)
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
        plan = commit(session, had_cookie)
        try:
            call = next(plan)
            while True:
                result = await getattr(store, call.method)(*call.args, **call.kwargs)
                call = plan.send(result)
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                loop = asyncio.get_running_loop()
                made = self._per_loop.pop(loop, None)
                if made is not None:
                    await made.client.aclose()
            await send(message)

        return wrapped
