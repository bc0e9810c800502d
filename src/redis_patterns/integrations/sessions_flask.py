"""Flask sessions in a `SessionStore`: ``app.session_interface = RedisSessionInterface(store)``.

``flask.session`` becomes a `FlaskSession`: loaded from Redis on first use (a request that never
touches the session sends nothing), written back with only the fields the request changed.
Call ``session.rotate(user_id=...)`` at login and ``session.destroy()`` (or ``clear()``) at
logout; ``get_session()`` returns it typed, for ``mypy --strict`` apps.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response
from flask import session as current_session
from flask.sessions import SessionInterface, SessionMixin

from .._errors import ConfigurationError
from .._sync.sessions import SessionStore
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

__all__ = ["FlaskSession", "RedisSessionInterface", "get_session"]

_PERMANENT = "_permanent"  # the field Flask's own sessions keep ``session.permanent`` in


def get_session() -> FlaskSession:
    """The current request's session, typed (``flask.session`` is typed `SessionMixin`).

    Raises:
        ConfigurationError: the app's ``session_interface`` is not a `RedisSessionInterface`.
        RuntimeError: outside a request (Flask's "working outside of request context").
    """
    session = current_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, FlaskSession):
        raise ConfigurationError(
            "flask.session is not a redis-patterns session: set app.session_interface ="
            " RedisSessionInterface(store)"
        )
    return session


class FlaskSession(RequestSession, SessionMixin):
    """A `RequestSession` that Flask accepts, loading itself on first access.

    ``permanent`` follows Flask: ``False`` makes the cookie a browser session cookie (no
    ``Max-Age``); it defaults to ``SESSION_PERMANENT`` and, once set, is kept in the session's
    ``_permanent`` field as Flask's own sessions do.
    """

    new = False
    modified = False

    def __init__(
        self,
        store: SessionStore,
        cookie: str | None,
        *,
        anonymous_when_unreachable: bool = False,
        permanent_default: bool = True,
    ) -> None:
        super().__init__(None, store._core.serializer.dumps)
        self._store = store
        self.cookie = cookie
        self._anonymous = anonymous_when_unreachable
        self._permanent_default = permanent_default
        # our own flag: Flask >= 3.1.3 sets ``accessed`` itself when the proxy is touched
        self.fetched = False

    def _ensure(self) -> None:
        if self.fetched:
            return
        self.fetched = True
        dumps = self._store._core.serializer.dumps
        try:
            loaded = self._store.get(self.cookie) if self.cookie else None  # malformed: no I/O
        except UNREACHABLE as exc:
            if not self._anonymous:
                raise
            unreachable(exc, "loading a session")
            self._set_loaded(None, dumps, degraded=True)
        else:
            self._set_loaded(loaded, dumps)
        self.new = self._loaded is None

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser (``Max-Age``: the session's lifetime)."""
        value = self.get(_PERMANENT, self._permanent_default)
        return bool(value)

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self[_PERMANENT] = bool(value)


class RedisSessionInterface(SessionInterface):
    """Stores Flask sessions in a `SessionStore`; the cookie carries only the session id.

    Args:
        store: the `SessionStore` (a sync client: Flask serves requests in threads).
        cookie_name, secure, samesite, path, domain, host_prefix: as for the ASGI
            `SessionMiddleware`: HttpOnly always, Secure and SameSite=Lax by default, the
            ``__Host-`` prefix when the cookie qualifies. Flask's ``SESSION_COOKIE_*`` settings
            are not consulted.
        on_backend_error: ``"raise"`` (default) or ``"anonymous"``, as for the ASGI
            `SessionMiddleware`: with ``"anonymous"`` a request finding the server unreachable
            goes on with an empty session, writes nothing and leaves the cookie alone.
        permanent: the default of ``session.permanent``; ``None`` reads Flask's
            ``SESSION_PERMANENT`` (``True`` unless configured). A non-permanent session's cookie
            has no ``Max-Age`` (it ends with the browser; the server still expires the session
            by its idle and absolute lifetimes).
        refresh_each_request: send the cookie again on every request that reads the session,
            renewing its ``Max-Age`` (Flask's ``SESSION_REFRESH_EACH_REQUEST``, read when
            ``None``; ``True`` unless configured). When off, the cookie is sent only when it
            changes or the request wrote to the session, as Flask does.

    Raises:
        ConfigurationError: an invalid cookie setting or ``on_backend_error``.
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
        on_backend_error: OnBackendError = "raise",
        permanent: bool | None = None,
        refresh_each_request: bool | None = None,
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
        self.anonymous_when_unreachable = check_on_backend_error(on_backend_error)
        for name, value in (
            ("permanent", permanent),
            ("refresh_each_request", refresh_each_request),
        ):
            if value is not None and not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be a bool or None, not {value!r}")
        self.permanent = permanent
        self.refresh_each_request = refresh_each_request

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        permanent = self.permanent
        if permanent is None:
            permanent = bool(app.config.get("SESSION_PERMANENT", True))
        return FlaskSession(
            self.store,
            request.cookies.get(self.cookie.name),
            anonymous_when_unreachable=self.anonymous_when_unreachable,
            permanent_default=permanent,
        )

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not isinstance(session, FlaskSession) or not session.fetched:
            return  # never touched: nothing read, nothing to write
        outcome = self._commit(session)
        response.vary.add("Cookie")
        if not outcome.touch_cookie:
            return
        permanent = session.permanent
        refresh = self.refresh_each_request
        if refresh is None:
            refresh = bool(app.config.get("SESSION_REFRESH_EACH_REQUEST", True))
        if outcome.refresh_only and not (permanent and refresh):
            return  # Flask's rule: an unchanged cookie is renewed only if permanent and asked
        max_age = outcome.max_age if permanent or outcome.sid is None else None
        response.headers.add("Set-Cookie", self.cookie.header(outcome.sid or "", max_age))

    def _commit(self, session: FlaskSession) -> Outcome:
        changes = session._commit_changes(session.cookie is not None)
        if changes is None:
            return UNTOUCHED  # the store was unreachable: nothing was loaded, nothing is written
        try:
            return self.store.commit(changes)
        except UNREACHABLE as exc:
            if not self.anonymous_when_unreachable:
                raise
            unreachable(exc, "saving a session")
            return UNTOUCHED
