"""A FastAPI app for the multi-process rate-limit test; ``uvicorn --workers`` imports it.

Environment as for ``django_ratelimit_site``: ``/items`` is limited by the `RateLimit`
dependency, by client address; each of its responses' status is counted per worker in Redis,
and ``/ready`` answers the worker's process id.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

import redis_patterns as rp
from redis_patterns.integrations.ratelimit_asgi import RateLimit

NAME = os.environ["RL_NAME"]
client = rp.connect(os.environ["REDIS_URL"], asyncio=True)
items_limit = RateLimit(
    rp.AsyncSlidingLog(client, int(os.environ["RL_LIMIT"]), 3600.0, name=f"{NAME}-items"),
    headers="draft",
)
STATUSES = f"{NAME}:statuses"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def count_statuses(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    if request.url.path != "/ready":
        await client.hincrby(STATUSES, f"{os.getpid()}:{response.status_code}", 1)
    return response


@app.get("/items", dependencies=[Depends(items_limit)])
async def items() -> dict[str, str]:
    return {"items": "ok"}


@app.get("/ready", response_class=PlainTextResponse)
async def ready() -> str:
    return str(os.getpid())
