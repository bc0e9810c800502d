"""An outage logs a few lines, not one per request: 2,000 requests against a stopped server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from redis_patterns import (
    AsyncCache,
    AsyncFixedWindow,
    EmbeddedServer,
    FixedWindow,
    StreamQueue,
    Worker,
    connect,
)
from redis_patterns.integrations.ratelimit_asgi import RateLimitMiddleware
from redis_patterns.integrations.ratelimit_flask import rate_limit

pytestmark = pytest.mark.fault
REQUESTS = 2000


def library_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("redis_patterns")]


async def test_asgi_limiter_failing_open_logs_once_for_2000_requests(
    server_factory: Callable[..., EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory()
    client = connect(server.url, asyncio=True, socket_timeout=1.0)

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(
        RateLimitMiddleware,
        limiter=AsyncFixedWindow(client, 10_000, 60.0),
        key=lambda conn: "user-1",
        fail_open=True,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/")).headers["RateLimit-Limit"] == "10000"  # up: limited
        server.stop()  # the outage: every hit now fails to connect
        caplog.set_level(logging.INFO, "redis_patterns")
        codes = [(await http.get("/")).status_code for _ in range(REQUESTS)]
    await client.aclose()
    assert codes == [200] * REQUESTS  # failed open
    records = library_records(caplog)
    print(f"\n{REQUESTS} requests during the outage: {len(records)} log line(s)")
    assert len(records) == 1
    assert records[0].getMessage().startswith("rate limiter unavailable, failing open")
    assert records[0].levelno == logging.WARNING


async def test_a_cached_endpoint_failing_open_answers_from_the_loader_and_logs_once(
    server_factory: Callable[..., EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    """An HTTP endpoint behind ``@cache.cached`` with ``fail_open=True``: with the server
    stopped, every request is answered by the loader (200, the right body), and the library
    logs one line for the whole outage."""
    server = server_factory()
    client = connect(server.url, asyncio=True, socket_timeout=1.0)
    cache = AsyncCache(client, "outage-cache", ttl=60, fail_open=True)
    loads: list[str] = []

    @cache.cached(key="price:{item}")
    async def price(item: str) -> dict[str, Any]:
        loads.append(item)
        return {"item": item, "price": 42}

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(await price(request.path_params["item"]))

    app = Starlette(routes=[Route("/price/{item}", endpoint)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/price/a")).json() == {"item": "a", "price": 42}
        assert (await http.get("/price/a")).json() == {"item": "a", "price": 42}
        assert loads == ["a"]  # the second request was a hit
        server.stop()
        caplog.set_level(logging.INFO, "redis_patterns")
        responses = [await http.get("/price/a") for _ in range(REQUESTS)]
    await client.aclose()
    assert {(r.status_code, r.text) for r in responses} == {(200, '{"item":"a","price":42}')}
    assert len(loads) == 1 + REQUESTS  # each one answered by the loader, nothing cached
    records = library_records(caplog)
    print(f"\n{REQUESTS} cached requests during the outage: {len(records)} log line(s)")
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING


def test_flask_limiter_failing_open_logs_once_for_2000_requests(
    server_factory: Callable[..., EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory()
    client = connect(server.url, socket_timeout=1.0)
    app = flask.Flask(__name__)

    @app.get("/")
    @rate_limit(FixedWindow(client, 10_000, 60.0), key=lambda: "user-1", fail_open=True)
    def hello() -> str:
        return "hi"

    http = app.test_client()
    assert http.get("/").headers["RateLimit-Limit"] == "10000"
    server.stop()
    caplog.set_level(logging.INFO, "redis_patterns")
    codes = [http.get("/").status_code for _ in range(REQUESTS)]
    client.close()
    assert codes == [200] * REQUESTS
    records = library_records(caplog)
    assert len(records) == 1
    assert "failing open" in records[0].getMessage()


def test_a_worker_retrying_through_an_outage_logs_once(
    server_factory: Callable[..., EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory()
    client: Any = connect(server.url, socket_timeout=1.0)
    queue = StreamQueue(client, "outage")
    queue.add({"n": 1})
    worker = Worker(queue, "w1", lambda m: None, block=0.05)
    worker.run_once()
    server.stop()
    caplog.set_level(logging.INFO, "redis_patterns")
    done = threading.Event()
    attempts: list[int] = []
    core: Any = worker._core  # run() is one plan of cycles: count the cycles it starts
    original = core.cycle

    def counted() -> Any:
        attempts.append(1)
        if len(attempts) >= 6:  # 5 retries after connection errors: about 1.5 s of backoff
            worker.stop()
        return original()

    core.cycle = counted

    def run() -> None:
        worker.run()
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert done.wait(30)
    thread.join()
    client.close()
    retrying = [r for r in library_records(caplog) if "retrying" in r.getMessage()]
    assert len(attempts) == 6
    assert len(retrying) == 1
