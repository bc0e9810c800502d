"""RateLimitMiddleware on FastAPI and Starlette: 429 with headers, recovery, fail open/closed."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the `httpx2` package for its TestClient and warns about httpx.
    warnings.filterwarnings("ignore", message=".*httpx.*", category=Warning)
    from starlette.testclient import TestClient

from redis_patterns import AsyncFixedWindow, AsyncRateLimiter, AsyncSlidingLog, EmbeddedServer
from redis_patterns.integrations.ratelimit_asgi import (
    EXEMPT,
    Exempt,
    RateLimitMiddleware,
    normalize_key,
)
from redis_patterns.testing.pytest_plugin import Backend


def fastapi_app(client: Any, limiter: AsyncRateLimiter, **options: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()  # on the loop that used it

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RateLimitMiddleware, limiter=limiter, **options)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def ok_app() -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    return Starlette(routes=[Route("/", hello), Route("/health", hello)])


def test_fastapi_429_with_headers_then_recovers(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 3, 1.0, name=prefix)
    with TestClient(fastapi_app(client, limiter)) as http:
        answers = [http.get("/hello") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].json() == {"hello": "world"}
        assert [a.headers["RateLimit-Limit"] for a in answers] == ["3"] * 4
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert all(a.headers["RateLimit-Reset"] == "1" for a in answers)
        assert "Retry-After" not in answers[0].headers
        retry_after = int(answers[3].headers["Retry-After"])
        assert retry_after == 1
        assert answers[3].text == "Too Many Requests"
        time.sleep(retry_after)
        recovered = http.get("/hello")
        assert recovered.status_code == 200
        assert recovered.headers["RateLimit-Remaining"] == "2"


def test_key_function_and_exemption(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)

    def api_key(conn: HTTPConnection) -> str | Exempt | None:
        if conn.headers.get("x-internal") == "yes":
            return EXEMPT  # only an explicit EXEMPT skips the limit
        return conn.headers.get("x-api-key")  # no key: limited by the client address

    with TestClient(fastapi_app(client, limiter, key=api_key)) as http:
        assert http.get("/hello", headers={"x-api-key": "a"}).status_code == 200
        assert http.get("/hello", headers={"x-api-key": "a"}).status_code == 429
        assert http.get("/hello", headers={"x-api-key": "b"}).status_code == 200
        anonymous = [http.get("/hello") for _ in range(2)]
        assert [r.status_code for r in anonymous] == [200, 429]
        free = [http.get("/hello", headers={"x-internal": "yes"}) for _ in range(3)]
        assert [r.status_code for r in free] == [200] * 3
        assert "RateLimit-Limit" not in free[0].headers


async def test_starlette_app_on_the_test_loop(backend: Backend, prefix: str) -> None:
    """httpx's ASGI transport runs the app on this test's loop: no thread, same client."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"X-App": "1"})

    client = backend.async_client()

    async def by_user(conn: HTTPConnection) -> str:
        return "user:" + conn.query_params.get("user", "anonymous")

    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", hello)]),
        AsyncFixedWindow(client, 2, 60.0, name=prefix),
        key=by_user,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [(await http.get("/?user=1")).status_code for _ in range(3)]
        other = await http.get("/?user=2")
    assert codes == [200, 200, 429]
    assert other.status_code == 200
    assert other.headers["X-App"] == "1"
    assert other.headers["RateLimit-Remaining"] == "1"
    await client.aclose()


# --- hostile and missing keys (issue 13, item 4) -------------------------------------------

HOSTILE: list[bytes] = [
    b"a{b",
    b"}",
    b"{ratelimit:x}",
    b"nul\x00byte",
    b"x" * 2048,
    b"\xff\xfe not utf-8",
    b"#sha256:" + b"0" * 64,  # shaped like a hashed key: hashed too, so it aliases nobody
]


def by_api_key(conn: HTTPConnection) -> str | None:
    return conn.headers.get("x-api-key")


async def test_hostile_header_keys_are_limited_never_a_500(backend: Backend, prefix: str) -> None:
    """Braces, NUL, empty, 2 KiB or non-UTF-8 keys: admitted exactly `limit` times, then 429."""
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 2, 60.0, name=prefix)
    app = RateLimitMiddleware(ok_app(), limiter, key=by_api_key)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for raw in HOSTILE:
            headers = [(b"x-api-key", raw)]
            codes = [(await http.get("/", headers=headers)).status_code for _ in range(3)]
            assert codes == [200, 200, 429], raw
        # each hostile key has its own state, under its normalized name
        for raw in HOSTILE:
            text = raw.decode("latin-1")  # how Starlette decodes header bytes
            (state,) = limiter.keys(normalize_key(text))
            assert await client.zcard(state) == 2, raw
        # an empty key is a missing one: it falls back to the client address
        codes = [(await http.get("/", headers={"x-api-key": ""})).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert (await http.get("/")).status_code == 429  # same caller, same bucket
    assert await client.zcard(limiter.keys("203.0.113.7")[0]) == 2
    await client.aclose()


async def test_hostile_query_keys_are_limited_never_a_500(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)

    def by_user(conn: HTTPConnection) -> str | None:
        return conn.query_params.get("user")

    app = RateLimitMiddleware(ok_app(), limiter, key=by_user)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for query in ("%7B", "%7D", "%00", "%FF%FE", "a" * 2048, "{x}:y"):
            codes = [(await http.get(f"/?user={query}")).status_code for _ in range(2)]
            assert codes == [200, 429], query
    await client.aclose()


async def test_missing_key_falls_back_to_the_client_address(backend: Backend, prefix: str) -> None:
    """A key function that cannot name the caller does not exempt it."""
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 2, 60.0, name=prefix)

    async def nobody(conn: HTTPConnection) -> None:
        return None

    app = RateLimitMiddleware(ok_app(), limiter, key=nobody)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answers = [await http.get("/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Remaining"] == "1"
    assert await client.zcard(limiter.keys("198.51.100.9")[0]) == 2
    await client.aclose()


async def test_exempt_is_the_only_exemption(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)

    def key(conn: HTTPConnection) -> str | Exempt:
        return EXEMPT if conn.url.path == "/health" else "everyone"

    app = RateLimitMiddleware(ok_app(), limiter, key=key)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        health = [await http.get("/health") for _ in range(3)]
        limited = [(await http.get("/")).status_code for _ in range(2)]
    assert [h.status_code for h in health] == [200] * 3
    assert all("RateLimit-Limit" not in h.headers for h in health)
    assert limited == [200, 429]
    await client.aclose()


def dead_server_client() -> Callable[[], Any]:
    server = EmbeddedServer().start()
    url = server.url
    server.stop()
    server.cleanup()
    return lambda: redis.asyncio.Redis.from_url(url, socket_timeout=1, retry=None)


@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_server_fails_open_or_closed_and_logs(
    fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    client = dead_server_client()()
    limiter = AsyncFixedWindow(client, 1, 60.0)
    caplog.set_level(logging.WARNING, "redis_patterns.ratelimit")
    with TestClient(fastapi_app(client, limiter, fail_open=fail_open)) as http:
        answers = [http.get("/hello") for _ in range(3)]
    assert [a.status_code for a in answers] == ([200] * 3 if fail_open else [503] * 3)
    assert all("RateLimit-Limit" not in a.headers for a in answers)
    records = [r for r in caplog.records if r.name == "redis_patterns.ratelimit"]
    assert len(records) == 1  # the same failure again within 60 s is counted, not logged
    assert all(("failing open" if fail_open else "failing closed") in r.message for r in records)
    assert all("BackendUnavailableError" in r.message for r in records)
    assert all("testclient" not in r.message for r in records)  # the key is never logged


@pytest.mark.fault
@pytest.mark.parametrize("fail_open", [True, False])
async def test_paused_server_answers_within_the_socket_timeout(fail_open: bool) -> None:
    """Scenario 14 (outage): SIGSTOP the server; the configured answer comes, never a hang."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    with EmbeddedServer() as server:
        client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.3, retry=None)
        limiter = AsyncFixedWindow(client, 100, 60.0)
        app = RateLimitMiddleware(
            Starlette(routes=[Route("/", hello)]), limiter, fail_open=fail_open
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/")).status_code == 200
            server.pause()
            try:
                started = time.monotonic()
                answer = await http.get("/")
                waited = time.monotonic() - started
            finally:
                server.resume()
        await client.aclose()
    assert answer.status_code == (200 if fail_open else 503)
    # bounded by the socket timeout (0.3 s), not a hang; generous for a loaded machine
    assert waited < 10


def test_refuses_a_sync_limiter(client: Any) -> None:
    from redis_patterns import FixedWindow

    with pytest.raises(TypeError, match="AsyncRateLimiter"):
        RateLimitMiddleware(Starlette(), FixedWindow(client, 1, 1.0))  # type: ignore[arg-type]


def test_bad_cost_is_refused_at_construction(backend: Backend) -> None:
    from redis_patterns import ConfigurationError

    limiter = AsyncFixedWindow(backend.async_client(), 3, 1.0)
    for cost in (0, 1.5, 4):
        with pytest.raises(ConfigurationError):
            RateLimitMiddleware(Starlette(), limiter, cost=cost)  # type: ignore[arg-type]
