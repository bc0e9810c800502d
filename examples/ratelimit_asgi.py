"""An ASGI app (Starlette; FastAPI works the same) behind RateLimitMiddleware: 429 + headers."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import redis_patterns as rp
from redis_patterns.integrations.ratelimit_asgi import EXEMPT, Exempt, RateLimitMiddleware


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


def api_key(conn: HTTPConnection) -> str | Exempt | None:
    """Limit per API key; without one, per client IP (None); health checks not at all."""
    if conn.url.path == "/health":
        return EXEMPT
    return conn.headers.get("x-api-key")  # hostile values are hashed, never a 500


async def main() -> None:
    client = rp.connect(asyncio=True)
    limiter = rp.AsyncSlidingLog(client, limit=3, window=10)
    await limiter.reset("demo-key")
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", hello)]),
        limiter,
        key=api_key,  # default: the client IP
        fail_open=True,  # if Redis is down: let requests through (logged); False answers 503
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        for _ in range(4):
            answer = await http.get("/", headers={"x-api-key": "demo-key"})
            print(
                answer.status_code,
                {k: v for k, v in answer.headers.items() if k.startswith(("ratelimit", "retry"))},
            )
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) >= 1
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
