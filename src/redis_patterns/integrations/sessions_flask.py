"""Flask sessions in a `SessionStore`: ``app.session_interface = RedisSessionInterface(store)``.

``flask.session`` becomes a `FlaskSession`: loaded from Redis on first use (a request that never
touches the session sends nothing), written back with only the fields the request changed.
Call ``session.rotate(user_id=...)`` at login and ``session.destroy()`` (or ``clear()``) at
logout.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from .._sync.sessions import SessionStore
from ._sessions_common import CookieSettings, Outcome, RequestSession, commit

__all__ = ["FlaskSession", "RedisSessionInterface"]


class FlaskSession(RequestSession, SessionMixin):
    """A `RequestSession` that Flask accepts, loading itself on first access."""

    new = False
    modified = False

    def __init__(self, store: SessionStore, cookie: str | None) -> None:
        super().__init__(None, store._core.serializer.dumps)
        self._store = store
        self.cookie = cookie
        # our own flag: Flask >= 3.1.3 sets ``accessed`` itself when the proxy is touched
        self.fetched = False

    def _ensure(self) -> None:
        if not self.fetched:
            self.fetched = True
            loaded = self._store.get(self.cookie) if self.cookie else None  # malformed: no I/O
            self._set_loaded(loaded, self._store._core.serializer.dumps)
            self.new = loaded is None

    @property
    def permanent(self) -> bool:
        """Always true: the cookie's Max-Age follows the store's expiry."""
        return True

    @permanent.setter
    def permanent(self, value: bool) -> None:
        pass


class RedisSessionInterface(SessionInterface):
    """Stores Flask sessions in a `SessionStore`; the cookie carries only the session id.

    Args:
        store: the `SessionStore` (a sync client: Flask serves requests in threads).
        cookie_name, secure, samesite, path, domain, host_prefix: as for the ASGI
            `SessionMiddleware`: HttpOnly always, Secure and SameSite=Lax by default, the
            ``__Host-`` prefix when the cookie qualifies. Flask's ``SESSION_COOKIE_*`` settings
            are not consulted.

    Raises:
        ConfigurationError: an invalid cookie setting.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        cookie_name: str = "session",
        secure: bool = True,
        samesite: str = "lax",
        path: str = "/",
        domain: str | None = None,
        host_prefix: bool | None = None,
    ) -> None:
        self.store = store
        self.cookie = CookieSettings.build(
            cookie_name,
            secure=secure,
            samesite=samesite,
            path=path,
            domain=domain,
            host_prefix=host_prefix,
        )

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        return FlaskSession(self.store, request.cookies.get(self.cookie.name))

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not isinstance(session, FlaskSession) or not session.fetched:
            return  # never touched: nothing read, nothing to write
        outcome = self._commit(session)
        response.vary.add("Cookie")
        if outcome.touch_cookie:
            response.headers.add(
                "Set-Cookie", self.cookie.header(outcome.sid or "", outcome.max_age)
            )

    def _commit(self, session: FlaskSession) -> Outcome:
        plan = commit(session, session.cookie is not None)
        try:
            call = next(plan)
            while True:
                call = plan.send(getattr(self.store, call.method)(*call.args, **call.kwargs))
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome
