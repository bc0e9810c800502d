"""The web integrations' options: ``on_backend_error`` with the server stopped (ASGI, Flask),
Flask's non-permanent sessions and ``refresh_each_request``, and the typed accessors."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask, jsonify, request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_patterns import (
    AsyncSessionStore,
    BackendUnavailableError,
    ConfigurationError,
    EmbeddedServer,
    SessionStore,
)
from redis_patterns.integrations._sessions_common import RequestSession
from redis_patterns.integrations.sessions_asgi import SessionMiddleware, get_session
from redis_patterns.integrations.sessions_flask import (
    FlaskSession,
    RedisSessionInterface,
)
from redis_patterns.integrations.sessions_flask import get_session as flask_session
from redis_patterns.testing.pytest_plugin import Backend

COOKIE = "__Host-session"
BASE = "https://localhost"
REQUESTS = 200


@pytest.fixture
def down(server_factory: Any) -> EmbeddedServer:
    """A private server, started (stop it in the test once sessions exist)."""
    server: EmbeddedServer = server_factory()
    return server


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "redis_patterns.sessions"]


# -- ASGI -------------------------------------------------------------------------------------


def asgi_app(server: EmbeddedServer, prefix: str, **options: Any) -> Starlette:
    async def visit(request: Request) -> JSONResponse:
        session = get_session(request)
        session["visits"] = session.get("visits", 0) + 1
        return JSONResponse({"user": session.user_id, "visits": session["visits"]})

    async def login(request: Request) -> JSONResponse:
        get_session(request).rotate(user_id="alice")
        return JSONResponse({})

    def store() -> AsyncSessionStore:
        return AsyncSessionStore(server.client(asyncio=True), namespace=prefix)

    middleware = [Middleware(SessionMiddleware, store=store, **options)]
    routes = [Route("/visit", visit), Route("/login", login, methods=["POST"])]
    return Starlette(routes=routes, middleware=middleware)


@pytest.mark.fault
def test_asgi_anonymous_when_the_server_is_down(
    down: EmbeddedServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redis_patterns.sessions")
    app = asgi_app(down, prefix, on_backend_error="anonymous")
    with TestClient(app, base_url="https://testserver") as http:
        http.post("/login")
        assert http.get("/visit").json() == {"user": "alice", "visits": 1}
        sid = http.cookies[COOKIE]
        down.stop()
        for _ in range(REQUESTS):
            response = http.get("/visit")
            assert response.status_code == 200
            assert response.json() == {"user": None, "visits": 1}  # empty, anonymous
            assert "set-cookie" not in response.headers  # the cookie is left alone
        assert http.cookies[COOKIE] == sid
        # a visitor without a cookie: the write fails, nothing is set
        http.cookies.clear()
        response = http.get("/visit")
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    lines = _warnings(caplog)
    assert len(lines) == 1, lines  # one coalesced line, not one per request
    assert "unreachable" in lines[0]
    assert "BackendUnavailableError" in lines[0]


@pytest.mark.fault
def test_asgi_raise_when_the_server_is_down(down: EmbeddedServer, prefix: str) -> None:
    app = asgi_app(down, prefix)  # the default
    with TestClient(app, base_url="https://testserver") as http:
        http.post("/login")
        down.stop()
        with pytest.raises(BackendUnavailableError, match="cannot reach the server"):
            http.get("/visit")
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as http:
        http.cookies.set(COOKIE, "0" * 47)  # malformed: no I/O, so it is the write that fails
        assert http.get("/visit").status_code == 500


def test_asgi_rejects_a_bad_on_backend_error(backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match="on_backend_error"):
        SessionMiddleware(Starlette(), store=lambda: None, on_backend_error="ignore")  # type: ignore[arg-type, return-value]


def test_get_session_is_a_fastapi_dependency(backend: Backend, prefix: str) -> None:
    app = FastAPI()
    client = backend.async_client

    app.add_middleware(
        SessionMiddleware,
        store=lambda: AsyncSessionStore(client(), namespace=prefix),
        secure=False,
    )

    @app.post("/count")
    async def count(session: Annotated[RequestSession, Depends(get_session)]) -> dict[str, int]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    with TestClient(app) as http:
        assert [http.post("/count").json()["n"] for _ in range(3)] == [1, 2, 3]


def test_get_session_without_the_middleware_says_so() -> None:
    async def view(request: Request) -> JSONResponse:
        get_session(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/", view)])
    with TestClient(app) as http, pytest.raises(ConfigurationError, match="SessionMiddleware"):
        http.get("/")


# -- Flask ------------------------------------------------------------------------------------


def flask_app(store: SessionStore, **options: Any) -> Flask:
    app = Flask(__name__)
    app.session_interface = RedisSessionInterface(store, **options)

    @app.get("/visit")
    def visit() -> Any:
        session = flask_session()
        session["visits"] = session.get("visits", 0) + 1
        return jsonify(user=session.user_id, visits=session["visits"])

    @app.get("/read")
    def read() -> Any:
        return jsonify(visits=flask_session().get("visits"))

    @app.post("/login")
    def login() -> Any:
        session = flask_session()
        session.rotate(user_id="alice")
        if request.args.get("remember") == "no":
            session.permanent = False
        return jsonify()

    return app


def cookies_of(response: Any) -> list[str]:
    return [str(h) for h in response.headers.getlist("Set-Cookie")]


@pytest.mark.fault
def test_flask_anonymous_when_the_server_is_down(
    down: EmbeddedServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redis_patterns.sessions")
    store = SessionStore(down.client(), namespace=prefix)
    http = flask_app(store, on_backend_error="anonymous").test_client()
    http.post("/login", base_url=BASE)
    assert http.get("/visit", base_url=BASE).get_json() == {"user": "alice", "visits": 1}
    down.stop()
    for _ in range(REQUESTS):
        response = http.get("/visit", base_url=BASE)
        assert response.status_code == 200
        assert response.get_json() == {"user": None, "visits": 1}
        assert cookies_of(response) == []
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert "unreachable" in lines[0]


@pytest.mark.fault
def test_flask_raise_when_the_server_is_down(down: EmbeddedServer, prefix: str) -> None:
    store = SessionStore(down.client(), namespace=prefix)
    app = flask_app(store)
    http = app.test_client()
    http.post("/login", base_url=BASE)
    down.stop()
    app.testing = True  # let the error through, as a 500 would carry it
    with pytest.raises(BackendUnavailableError, match="cannot reach the server"):
        http.get("/visit", base_url=BASE)
    app.testing = False
    assert http.get("/visit", base_url=BASE).status_code == 500


def test_flask_non_permanent_session_has_no_max_age(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60)
    http = flask_app(store).test_client()
    (header,) = cookies_of(http.post("/login?remember=no", base_url=BASE))
    assert "Max-Age" not in header
    assert "Expires" not in header
    # kept across requests: the next cookie is a browser session cookie too
    (header,) = cookies_of(http.get("/visit", base_url=BASE))
    assert "Max-Age" not in header
    # a logout still deletes the cookie
    sid = header.split(";")[0].split("=", 1)[1]
    assert store.get(sid) is not None
    assert store.ttl(sid) is not None  # the server still expires it by idle_ttl


def test_flask_session_permanent_config_is_the_default(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60)
    app = flask_app(store)
    app.config["SESSION_PERMANENT"] = False
    (header,) = cookies_of(app.test_client().get("/visit", base_url=BASE))
    assert "Max-Age" not in header
    app = flask_app(store, permanent=True)  # the interface's option wins
    app.config["SESSION_PERMANENT"] = False
    (header,) = cookies_of(app.test_client().get("/visit", base_url=BASE))
    assert "Max-Age=60" in header


@pytest.mark.parametrize("how", ["option", "config"])
def test_flask_refresh_each_request_off(backend: Backend, prefix: str, how: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60)
    if how == "option":
        app = flask_app(store, refresh_each_request=False)
    else:
        app = flask_app(store)
        app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    http = app.test_client()
    assert len(cookies_of(http.get("/visit", base_url=BASE))) == 1  # created: sent
    assert cookies_of(http.get("/read", base_url=BASE)) == []  # read only: not sent again
    assert len(cookies_of(http.get("/visit", base_url=BASE))) == 1  # written: sent, as Flask
    assert len(cookies_of(http.post("/login", base_url=BASE))) == 1  # a new id: sent
    # the default sends it on every request that reads the session
    assert len(cookies_of(flask_app(store).test_client().get("/read", base_url=BASE))) == 0
    http2 = flask_app(store).test_client()
    http2.get("/visit", base_url=BASE)
    assert len(cookies_of(http2.get("/read", base_url=BASE))) == 1


def test_flask_bad_options_are_refused(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    for bad in ({"on_backend_error": "x"}, {"permanent": "yes"}, {"refresh_each_request": 1}):
        with pytest.raises(ConfigurationError):
            RedisSessionInterface(store, **bad)


def test_flask_get_session_is_typed_and_checks_the_interface(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    app = flask_app(store)
    with app.test_request_context("/", base_url=BASE):
        assert isinstance(flask_session(), FlaskSession)
    plain = Flask(__name__)
    plain.secret_key = "x"
    with (
        plain.test_request_context("/"),
        pytest.raises(ConfigurationError, match="session_interface"),
    ):
        flask_session()
