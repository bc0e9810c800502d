"""FastAPI app with server-side sessions (FastAPI is Starlette: the same SessionMiddleware).

Run it as a script to exercise it with FastAPI's TestClient; serve it with
``uvicorn examples.sessions_fastapi:app``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from redis_patterns import AsyncSessionStore, connect
from redis_patterns.integrations.sessions_asgi import SessionMiddleware

app = FastAPI()
app.add_middleware(
    SessionMiddleware,
    store=lambda: AsyncSessionStore(connect(asyncio=True), idle_ttl=1800, absolute_ttl=8 * 3600),
)


@app.post("/login/{user}")
async def login(user: str, request: Request) -> dict[str, Any]:
    session: Any = request.session
    session.rotate(user_id=user)  # a new id at login (fixation defence)
    session["visits"] = 0
    return {"user": user}


@app.get("/visit")
async def visit(request: Request) -> dict[str, Any]:
    session: Any = request.session
    session["visits"] = session.get("visits", 0) + 1  # only this field is written back
    return {"user": session.user_id, "visits": session["visits"]}


@app.post("/logout")
async def logout(request: Request) -> dict[str, Any]:
    session: Any = request.session
    session.destroy()
    return {}


if __name__ == "__main__":
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as http:
        http.post("/login/alice")
        http.get("/visit")
        print(http.get("/visit").json())
        http.post("/logout")
        assert http.get("/visit").json()["user"] is None
