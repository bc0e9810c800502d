"""The one-route Starlette app `bench_asgi_hey.py` serves with uvicorn, with or without the limiter.

``RP_BENCH_URL`` names the server, ``RP_BENCH_MODE`` is ``none`` (no limiter), ``on``
(`RateLimitMiddleware` on an auto-pipelined client) or ``off`` (batching off).
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import redis_patterns
from redis_patterns.integrations.ratelimit_asgi import RateLimitMiddleware


async def _home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create() -> Any:
    """The app for ``uvicorn benchmarks.asgi_app:create --factory``."""
    app: Any = Starlette(routes=[Route("/", _home)])
    mode = os.environ.get("RP_BENCH_MODE", "none")
    if mode == "none":
        return app
    client = redis.asyncio.Redis.from_url(os.environ["RP_BENCH_URL"], socket_timeout=5)
    redis_patterns.autopipeline(client, mode == "on")
    # a window no run fills: every request is admitted, each one hit
    limiter = redis_patterns.AsyncFixedWindow(client, 10**12, 86_400, name=f"hey-{mode}")
    return RateLimitMiddleware(app, limiter=limiter)
