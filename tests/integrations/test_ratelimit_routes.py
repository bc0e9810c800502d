"""Rate limits per route: Starlette Route/Mount middleware, path-scoped middleware, the FastAPI
`RateLimit` dependency; both header styles, the on_refused hooks, and the order with sessions."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and those
# name dependencies that are local variables of the tests, which a string annotation cannot.
import logging
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi import Response as FastAPIResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from test_ratelimit_asgi import HOSTILE, dead_server_client

from redis_patterns import (
    AsyncFixedWindow,
    AsyncMultiLimit,
    AsyncSessionStore,
    AsyncSlidingLog,
    AsyncTokenBucket,
    ConfigurationError,
    Decision,
)
from redis_patterns.integrations.ratelimit_asgi import (
    EXEMPT,
    Exempt,
    RateLimit,
    RateLimitExceeded,
    RateLimitMiddleware,
    rate_limit_exceeded_handler,
)
from redis_patterns.integrations.ratelimit_http import (
    Refusal,
    RefusalResponse,
    json_error,
    problem_json,
    rate_limit_headers,
)
from redis_patterns.integrations.sessions_asgi import SessionMiddleware
from redis_patterns.testing.pytest_plugin import Backend


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi")


def http(app: Any, client: tuple[str, int] = ("203.0.113.7", 4321)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def codes(client: httpx.AsyncClient, path: str, count: int, **kw: Any) -> list[int]:
    return [(await client.get(path, **kw)).status_code for _ in range(count)]


# --- Starlette: a route or a mount with its own limit --------------------------------------


async def test_route_and_mount_middleware_give_each_route_its_own_limit(
    backend: Backend, prefix: str
) -> None:
    client = backend.async_client()
    login = AsyncSlidingLog(client, 1, 60.0, name=f"{prefix}-login")
    api = AsyncSlidingLog(client, 3, 60.0, name=f"{prefix}-api")
    app = Starlette(
        routes=[
            Route("/login", hello, middleware=[Middleware(RateLimitMiddleware, limiter=login)]),
            Mount(
                "/api",
                routes=[Route("/a", hello), Route("/b", hello)],
                middleware=[Middleware(RateLimitMiddleware, limiter=api)],
            ),
            Route("/free", hello),
        ]
    )
    async with http(app) as c:
        assert await codes(c, "/login", 2) == [200, 429]
        assert await codes(c, "/api/a", 2) + await codes(c, "/api/b", 2) == [200, 200, 200, 429]
        free = await c.get("/free")
    assert free.status_code == 200
    assert "RateLimit-Limit" not in free.headers
    await client.aclose()


async def test_paths_scope_an_app_level_middleware(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    app: Any = Starlette(routes=[Route(p, hello) for p in ("/login", "/login/x", "/loginx", "/")])
    app = RateLimitMiddleware(
        app, AsyncSlidingLog(client, 2, 60.0, name=f"{prefix}-l"), paths=["/login"]
    )
    app = RateLimitMiddleware(app, AsyncSlidingLog(client, 5, 60.0, name=f"{prefix}-all"))
    async with http(app) as c:
        login = [await c.get(p) for p in ("/login", "/login/x", "/login")]
        other = await codes(c, "/loginx", 1) + await codes(c, "/", 2)
    assert [r.status_code for r in login] == [200, 200, 429]
    assert login[0].headers["RateLimit-Limit"] == "2"  # the inner, tighter limit's headers
    assert other == [200, 200, 429]  # 5 in all: 3 logins + 2 others, then refused
    await client.aclose()


async def test_a_limiter_outside_the_session_middleware_refuses_before_any_session_io(
    backend: Backend, prefix: str
) -> None:
    """Outermost and path-scoped, a refusal costs one command; inside, the session's too."""

    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "ada"
        return PlainTextResponse("in")

    client = backend.async_client()
    store = AsyncSessionStore(client, namespace=prefix, idle_ttl=60, absolute_ttl=3600)
    inner = AsyncSlidingLog(client, 1, 60.0, name=f"{prefix}-inner")
    outer = AsyncSlidingLog(client, 1, 60.0, name=f"{prefix}-outer")
    app = Starlette(
        routes=[
            Route("/login", login),
            Route("/inside", hello, middleware=[Middleware(RateLimitMiddleware, limiter=inner)]),
            Route("/outside", hello),
        ],
        middleware=[
            Middleware(RateLimitMiddleware, limiter=outer, paths=["/outside"]),  # outermost
            Middleware(SessionMiddleware, store=store, secure=False),
        ],
    )
    async with http(app) as c:
        assert (await c.get("/login")).status_code == 200  # now the client has a cookie
        assert await codes(c, "/inside", 1) + await codes(c, "/outside", 1) == [200, 200]
        with backend.counter() as inside:
            assert (await c.get("/inside")).status_code == 429
        with backend.counter() as outside:
            assert (await c.get("/outside")).status_code == 429
    assert outside.names == ["EVALSHA"]  # the limiter only
    assert inside.names[0] == "EVALSHA"  # the session's read and refresh ...
    assert inside.names[-1] == "EVALSHA"  # ... and then the limiter
    assert len(inside.names) >= 2
    await client.aclose()


# --- both header styles and the on_refused hook, on the middleware ------------------------


@pytest.mark.parametrize("style", ["draft", "both"])
async def test_draft_headers(backend: Backend, prefix: str, style: Any) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 2, 60.0, name=f"{prefix}-api")
    app = RateLimitMiddleware(Starlette(routes=[Route("/", hello)]), limiter, headers=style)
    async with http(app) as c:
        answers = [await c.get("/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    name = f'"{prefix}-api"'
    assert [a.headers["RateLimit-Policy"] for a in answers] == [f"{name};q=2;w=60"] * 3
    assert [a.headers["RateLimit"] for a in answers] == [
        f"{name};r=1;t=60",
        f"{name};r=0;t=60",
        f"{name};r=0;t={answers[2].headers['Retry-After']}",
    ]
    assert ("RateLimit-Limit" in answers[0].headers) == (style == "both")
    await client.aclose()


async def test_problem_json_hook_keeps_the_headers(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", hello)]), limiter, on_refused=problem_json, headers="both"
    )
    async with http(app) as c:
        await c.get("/")
        refused = await c.get("/")
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/problem+json"
    retry_after = int(refused.headers["Retry-After"])
    assert 55 <= retry_after <= 60
    assert refused.json() == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit exceeded; retry after {retry_after} s.",
        "violated-policies": [prefix],
    }
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit"].startswith(f'"{prefix}";r=0;')
    await client.aclose()


async def test_a_custom_hook_shapes_status_body_and_headers(backend: Backend, prefix: str) -> None:
    seen: list[Refusal] = []

    def teapot(refusal: Refusal) -> RefusalResponse:
        seen.append(refusal)
        return RefusalResponse(418, b"<p>later</p>", "text/html", {"X-Why": "limit"})

    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)
    app = RateLimitMiddleware(Starlette(routes=[Route("/", hello)]), limiter, on_refused=teapot)
    async with http(app) as c:
        await c.get("/")
        refused = await c.get("/")
    assert (refused.status_code, refused.text) == (418, "<p>later</p>")
    assert refused.headers["X-Why"] == "limit"
    assert refused.headers["Retry-After"] == str(seen[0].retry_after)
    (refusal,) = seen
    assert refusal.status == 429
    assert refusal.decision is not None
    assert not refusal.decision.allowed
    assert refusal.violated == (prefix,)
    await client.aclose()


async def test_fail_closed_uses_the_hook_too(caplog: pytest.LogCaptureFixture) -> None:
    client = dead_server_client()()
    limiter = AsyncFixedWindow(client, 1, 60.0)
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", hello)]), limiter, fail_open=False, on_refused=json_error
    )
    caplog.set_level(logging.WARNING, "redis_patterns.ratelimit")
    async with http(app) as c:
        answer = await c.get("/")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.json() == {
        "error": "Service Unavailable",
        "detail": "The rate limiter is unavailable; retry after 1 s.",
        "retry_after": 1,
    }
    await client.aclose()


async def test_multi_limit_draft_headers_name_every_limit(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncMultiLimit(
        [
            AsyncTokenBucket(client, 2, 1e-3, name=f"{prefix}-burst"),
            AsyncSlidingLog(client, 100, 3600.0, name=f"{prefix}-hourly"),
        ]
    )
    app = RateLimitMiddleware(Starlette(routes=[Route("/", hello)]), limiter, headers="draft")
    async with http(app) as c:
        answers = [await c.get("/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    policy = answers[0].headers["RateLimit-Policy"]
    assert policy == f'"{prefix}-burst";q=2;w=2000, "{prefix}-hourly";q=100;w=3600'
    assert answers[1].headers["RateLimit"].startswith(f'"{prefix}-burst";r=0;')
    assert f'"{prefix}-hourly";r=98;t=3600' in answers[1].headers["RateLimit"]
    await client.aclose()


# --- FastAPI: the RateLimit dependency ------------------------------------------------------


def fastapi_app(client: Any, name: str, **options: Any) -> FastAPI:
    """Two routes, two limits: 2 logins and 4 searches per minute."""
    login_limit = RateLimit(AsyncSlidingLog(client, 2, 60.0, name=f"{name}-l"), **options)
    search_limit = RateLimit(AsyncSlidingLog(client, 4, 60.0, name=f"{name}-s"), **options)
    app = FastAPI()

    @app.post("/login", dependencies=[Depends(login_limit)])
    async def login() -> dict[str, str]:
        return {"ok": "login"}

    @app.get("/search")
    async def search(
        decision: Annotated[Decision | None, Depends(search_limit)],
    ) -> dict[str, Any]:
        return {"remaining": None if decision is None else decision.remaining}

    return app


async def test_dependency_limits_each_route_and_sets_success_headers(
    backend: Backend, prefix: str
) -> None:
    client = backend.async_client()
    app = fastapi_app(client, name=prefix, key=lambda conn: prefix)
    async with http(app) as c:
        logins = [await c.post("/login") for _ in range(3)]
        searches = [await c.get("/search") for _ in range(5)]
    assert [r.status_code for r in logins] == [200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in logins] == ["1", "0", "0"]
    assert logins[0].json() == {"ok": "login"}
    # no handler registered: FastAPI's own error body, with our status and headers
    assert logins[2].json() == {"detail": "Too Many Requests"}
    assert 55 <= int(logins[2].headers["Retry-After"]) <= 60
    assert [r.status_code for r in searches] == [200] * 4 + [429]
    assert [r.json().get("remaining") for r in searches[:4]] == [3, 2, 1, 0]
    assert all(r.headers["RateLimit-Limit"] == "4" for r in searches)
    await client.aclose()


async def test_dependency_with_the_handler_sends_the_hooks_body(
    backend: Backend, prefix: str
) -> None:
    client = backend.async_client()
    app = fastapi_app(client, name=prefix, on_refused=problem_json, headers="draft")
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)
    async with http(app) as c:
        answers = [await c.post("/login") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit"] == f'"{prefix}-l";r=1;t=60'
    assert answers[2].headers["Content-Type"] == "application/problem+json"
    body = answers[2].json()
    assert (body["status"], body["violated-policies"]) == (429, [f"{prefix}-l"])
    assert answers[2].headers["RateLimit-Policy"] == f'"{prefix}-l";q=2;w=60'
    await client.aclose()


async def test_a_hook_without_the_handler_is_logged_once(
    backend: Backend, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = backend.async_client()
    app = fastapi_app(client, name=prefix, on_refused=problem_json)
    caplog.set_level(logging.WARNING, "redis_patterns.ratelimit")
    async with http(app) as c:
        answers = [await c.post("/login") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert answers[3].json() == {"detail": "Too Many Requests"}
    (record,) = [r for r in caplog.records if r.name == "redis_patterns.ratelimit"]
    assert "rate_limit_exceeded_handler" in record.getMessage()
    await client.aclose()


async def test_one_dependency_on_router_and_parameter_is_one_hit(
    backend: Backend, prefix: str
) -> None:
    client = backend.async_client()
    limit = RateLimit(AsyncSlidingLog(client, 3, 60.0, name=prefix))
    router = APIRouter(dependencies=[Depends(limit)])

    @router.get("/item")
    async def item(decision: Annotated[Decision | None, Depends(limit)]) -> dict[str, Any]:
        assert decision is not None
        return {"remaining": decision.remaining}

    @router.get("/own")
    async def own(response: FastAPIResponse) -> PlainTextResponse:
        # an endpoint returning its own Response gets no headers from the dependency
        return PlainTextResponse("own")

    app = FastAPI()
    app.include_router(router)
    async with http(app) as c:
        first = await c.get("/item")
        own_response = await c.get("/own")
        rest = await codes(c, "/item", 2)
    assert first.json() == {"remaining": 2}
    assert own_response.status_code == 200
    assert "RateLimit-Limit" not in own_response.headers
    assert rest == [200, 429]  # /own counted too: 3 in all
    await client.aclose()


async def test_dependency_exempt_hostile_and_fail_closed(backend: Backend, prefix: str) -> None:
    client = backend.async_client()

    def key(conn: HTTPConnection) -> str | Exempt | None:
        if conn.headers.get("x-internal"):
            return EXEMPT
        return conn.headers.get("x-api-key")

    limit = RateLimit(AsyncSlidingLog(client, 2, 60.0, name=prefix), key=key)
    app = FastAPI()

    @app.get("/")
    async def root(decision: Annotated[Decision | None, Depends(limit)]) -> dict[str, bool]:
        return {"limited": decision is not None}

    async with http(app) as c:
        free = [await c.get("/", headers={"x-internal": "1"}) for _ in range(3)]
        for raw in HOSTILE:
            assert await codes(c, "/", 3, headers=[(b"x-api-key", raw)]) == [200, 200, 429], raw
        anonymous = await codes(c, "/", 3)
    assert [f.json() for f in free] == [{"limited": False}] * 3
    assert all("RateLimit-Limit" not in f.headers for f in free)
    assert anonymous == [200, 200, 429]  # no key: the client address is limited
    await client.aclose()

    dead = dead_server_client()()
    closed = RateLimit(AsyncFixedWindow(dead, 1, 60.0), fail_open=False)
    app = FastAPI()
    app.get("/", dependencies=[Depends(closed)])(lambda: {"never": "here"})
    async with http(app) as c:
        answer = await c.get("/")
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")
    assert answer.json() == {"detail": "Rate limiter unavailable"}
    await dead.aclose()


def test_dependency_checks_its_options(backend: Backend) -> None:
    limiter = AsyncFixedWindow(backend.async_client(), 3, 1.0)
    with pytest.raises(ConfigurationError):
        RateLimit(limiter, cost=4)
    with pytest.raises(ConfigurationError):
        RateLimit(limiter, headers="ietf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncRateLimiter"):
        RateLimit(object())  # type: ignore[arg-type]


async def test_endpoints_returning_a_response_add_the_headers_themselves(
    backend: Backend, prefix: str
) -> None:
    """The documented way: read the decision, build the headers with the public builder."""
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 2, 60.0, name=prefix)
    limit = RateLimit(limiter, headers="draft")
    app = FastAPI()

    @app.get("/csv")
    async def csv(decision: Annotated[Decision | None, Depends(limit)]) -> PlainTextResponse:
        headers = {} if decision is None else rate_limit_headers(limiter, decision, style="draft")
        return PlainTextResponse("a,b\n", headers=headers)

    async with http(app) as c:
        answer = await c.get("/csv")
    assert answer.headers["RateLimit"] == f'"{prefix}";r=1;t=60'
    assert answer.text == "a,b\n"
    await client.aclose()
