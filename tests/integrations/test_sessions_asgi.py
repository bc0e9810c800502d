"""ASGI SessionMiddleware with Starlette: cookie flags, login rotation, logout, forged cookies."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from redis_patterns import AsyncSessionStore, ConfigurationError, SessionStore
from redis_patterns.integrations.sessions_asgi import SessionMiddleware
from redis_patterns.testing.pytest_plugin import Backend

COOKIE = "__Host-session"


class Rendezvous:
    """Wait until ``parties`` tasks arrived (asyncio.Barrier is Python 3.11+)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await self.event.wait()


def make_app(store: Any, barrier: Rendezvous | None = None, **options: Any) -> Starlette:
    def info(request: Request) -> JSONResponse:
        session: Any = request.session
        return JSONResponse({"id": session.id, "user": session.user_id, "data": dict(session)})

    async def whoami(request: Request) -> JSONResponse:
        return info(request)

    async def put(request: Request) -> JSONResponse:
        if barrier is not None:  # both requests have loaded the session before either writes
            await asyncio.wait_for(barrier.wait(), 30)
        for key, value in request.query_params.items():
            request.session[key] = value
        return info(request)

    async def login(request: Request) -> JSONResponse:
        session: Any = request.session
        session.rotate(user_id=request.query_params["user"])
        request.session["role"] = "member"
        return info(request)

    async def relogin(request: Request) -> JSONResponse:
        session: Any = request.session
        session.clear()  # the classic idiom: forget everything, then start the new login
        session["greeting"] = "hello"
        session.rotate(user_id=request.query_params["user"])
        return info(request)

    async def logout(request: Request) -> JSONResponse:
        request.session.clear()
        return info(request)

    async def noop(request: Request) -> JSONResponse:
        return JSONResponse({})

    routes = [
        Route("/whoami", whoami),
        Route("/put", put, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/relogin", relogin, methods=["POST"]),
        Route("/noop", noop),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, store=store, **options)]
    )


def cookie_of(response: Any) -> str:
    (header,) = response.headers.get_list("set-cookie")
    return str(header)


def sid_of(header: str) -> str:
    match = re.match(rf"{COOKIE}=([^;]*);", header)
    assert match, header
    return match.group(1)


@pytest.fixture
def factory(backend: Backend, prefix: str) -> Callable[..., Callable[[], AsyncSessionStore]]:
    def make(**kwargs: Any) -> Callable[[], AsyncSessionStore]:
        # called by the middleware inside TestClient's own event loop
        return lambda: AsyncSessionStore(backend.async_client(), namespace=prefix, **kwargs)

    return make


def test_login_sets_secure_cookie_and_rotates(backend: Backend, prefix: str, factory: Any) -> None:
    check = SessionStore(backend.client(), namespace=prefix)
    app = make_app(factory(idle_ttl=60, absolute_ttl=3600))
    with TestClient(app, base_url="https://testserver") as client:
        first = client.post("/put", params={"cart": "3"})
        header = cookie_of(first)
        parts = {p.strip().split("=")[0].lower() for p in header.split(";")}
        assert header.startswith(f"{COOKIE}=")
        assert {"httponly", "secure", "samesite", "path", "max-age"} <= parts
        assert "domain" not in parts
        assert "SameSite=Lax" in header
        assert "Path=/;" in header
        assert "Max-Age=60" in header  # the store's idle lifetime, left at this read
        anonymous = sid_of(header)
        assert first.json()["id"] is None  # the id is assigned when the response is sent

        login = client.post("/login", params={"user": "alice"})
        logged_in = sid_of(cookie_of(login))
        assert logged_in != anonymous
        assert check.get(anonymous) is None
        got = check.get(logged_in)
        assert got is not None
        assert got.user_id == "alice"
        assert dict(got) == {"cart": "3", "role": "member"}
        assert check.sessions_of("alice") == [logged_in]

        me = client.get("/whoami").json()
        assert me == {"id": logged_in, "user": "alice", "data": {"cart": "3", "role": "member"}}

        logout = client.post("/logout")
        assert "Max-Age=0" in cookie_of(logout)
        assert backend.client().exists(check._core._key_of(logged_in)) == 0
        assert client.get("/whoami").json() == {"id": None, "user": None, "data": {}}


@pytest.mark.parametrize(
    "forged",
    [
        f"{secrets.randbelow(4096):03x}.{secrets.token_urlsafe(32)}",  # well-formed, unknown
        "not-a-session-id",
        "x" * 4000,
    ],
)
def test_forged_cookie_gets_a_fresh_anonymous_session(
    backend: Backend, prefix: str, factory: Any, forged: str
) -> None:
    check = SessionStore(backend.client(), namespace=prefix)
    victim = check.create({"secret": "yes"}, user_id="victim")
    app = make_app(factory())
    with TestClient(app, base_url="https://testserver") as client:
        client.cookies.set(COOKIE, forged)
        response = client.get("/whoami")
        assert response.json() == {"id": None, "user": None, "data": {}}
        assert "Max-Age=0" in cookie_of(response)  # the bad cookie is dropped
        client.cookies.set(COOKIE, forged)
        fresh = sid_of(cookie_of(client.post("/put", params={"a": "1"})))
        assert fresh != forged
        assert check.get(forged) is None
        got = check.get(fresh)
        assert got is not None
        assert got.user_id is None
        assert dict(got) == {"a": "1"}
    assert check.get(victim.id) is not None


def test_expired_cookie_gets_a_fresh_session(backend: Backend, prefix: str, factory: Any) -> None:
    check = SessionStore(backend.client(), namespace=prefix, idle_ttl=0.3)
    old = check.create({"a": 1}, user_id="bob")
    deadline = time.monotonic() + 10
    while check.ttl(old.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with TestClient(make_app(factory(idle_ttl=0.3)), base_url="https://testserver") as client:
        client.cookies.set(COOKIE, old.id)
        assert client.get("/whoami").json() == {"id": None, "user": None, "data": {}}


def test_no_cookie_and_no_use_sends_nothing(backend: Backend, prefix: str, factory: Any) -> None:
    with TestClient(make_app(factory()), base_url="https://testserver") as client:
        client.get("/noop")  # connect outside the counted block
        with backend.counter() as seen:
            response = client.get("/noop")
            client.cookies.set(COOKIE, "malformed")
            client.get("/noop")
        assert "set-cookie" not in response.headers
    assert seen.count == 0


def test_request_with_session_is_one_command(backend: Backend, prefix: str, factory: Any) -> None:
    with TestClient(make_app(factory()), base_url="https://testserver") as client:
        client.post("/put", params={"a": "1"})  # create
        client.post("/put", params={"a": "2"})  # get + write: both scripts now cached
        with backend.counter() as seen:
            client.get("/whoami")
        assert seen.names == ["EVALSHA"]  # read + sliding refresh; nothing changed, no write
        with backend.counter() as seen:
            client.post("/put", params={"b": "2"})
        assert seen.names == ["EVALSHA", "EVALSHA"]  # read, then write the one changed field


async def test_concurrent_requests_keep_both_changes(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix)
    made = await store.create({"base": 1})
    app = make_app(store, barrier=Rendezvous(2))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        http.cookies.set(COOKIE, made.id)
        first, second = await asyncio.gather(
            http.post("/put", params={"theme": "dark"}),
            http.post("/put", params={"lang": "fr"}),
        )
    assert first.status_code == second.status_code == 200
    got = await store.get(made.id)
    assert got is not None
    assert dict(got) == {"base": 1, "theme": "dark", "lang": "fr"}
    await client.aclose()


def test_plain_http_cookie_when_secure_is_off(backend: Backend, prefix: str, factory: Any) -> None:
    app = make_app(factory(), secure=False)
    with TestClient(app) as client:
        header = cookie_of(client.post("/put", params={"a": "1"}))
        assert header.startswith("session=")
        assert "Secure" not in header
        assert client.get("/whoami").json()["data"] == {"a": "1"}


@pytest.mark.parametrize(
    "options",
    [
        {"samesite": "none", "secure": False},
        {"host_prefix": True, "domain": "example.com"},
        {"host_prefix": True, "secure": False},
        {"samesite": "sideways"},
        {"cookie_name": "a;b"},
    ],
)
def test_bad_cookie_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(make_app(None), store=lambda: None, **options)  # type: ignore[arg-type,return-value]


def test_clear_then_set_starts_a_new_session(backend: Backend, prefix: str, factory: Any) -> None:
    check = SessionStore(backend.client(), namespace=prefix)
    with TestClient(make_app(factory()), base_url="https://testserver") as client:
        old = sid_of(cookie_of(client.post("/put", params={"cart": "1"})))
        new = sid_of(cookie_of(client.post("/relogin", params={"user": "ann"})))
        assert new != old
        assert backend.client().exists(check._core._key_of(old)) == 0
        got = check.get(new)
        assert got is not None
        assert got.user_id == "ann"
        assert dict(got) == {"greeting": "hello"}


def test_store_per_loop_is_made_inside_the_loop_and_closed(backend: Backend, prefix: str) -> None:
    made: list[tuple[AsyncSessionStore, asyncio.AbstractEventLoop]] = []
    closed: list[bool] = []

    def make_store() -> AsyncSessionStore:
        client = backend.async_client()
        original = client.aclose

        async def aclose(*args: Any, **kwargs: Any) -> None:
            closed.append(True)
            await original(*args, **kwargs)

        client.aclose = aclose  # type: ignore[method-assign]
        store = AsyncSessionStore(client, namespace=prefix)
        made.append((store, asyncio.get_running_loop()))
        return store

    app = make_app(make_store)
    for _ in range(2):  # each TestClient block runs the app on a loop of its own
        with TestClient(app, base_url="https://testserver") as client:
            client.post("/put", params={"a": "1"})
            client.get("/whoami")
    assert len(made) == 2
    assert made[0][1] is not made[1][1]
    assert closed == [True, True]
