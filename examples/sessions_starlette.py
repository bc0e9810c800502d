"""Starlette (ASGI) app with server-side sessions: login rotates the id, logout deletes it.

Run it as a script to exercise it with Starlette's TestClient; serve it with any ASGI server
(``uvicorn examples.sessions_starlette:app``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_patterns import AsyncSessionStore, connect
from redis_patterns.integrations.sessions_asgi import SessionMiddleware


def make_store() -> AsyncSessionStore:
    # called once per event loop, inside it: an asyncio client belongs to its loop
    return AsyncSessionStore(connect(asyncio=True), idle_ttl=1800, absolute_ttl=8 * 3600)


async def add_to_cart(request: Request) -> JSONResponse:
    session: Any = request.session
    session["cart"] = [*session.get("cart", []), request.path_params["sku"]]
    return JSONResponse({"cart": session["cart"]})


async def login(request: Request) -> JSONResponse:
    session: Any = request.session
    session.rotate(user_id=request.path_params["user"])  # new id at login, cart kept
    return JSONResponse({"user": request.path_params["user"]})


async def logout(request: Request) -> JSONResponse:
    request.session.clear()  # deletes the session in Redis and the cookie
    return JSONResponse({})


async def me(request: Request) -> JSONResponse:
    session: Any = request.session
    return JSONResponse({"user": session.user_id, "data": dict(session)})


app = Starlette(
    routes=[
        Route("/cart/{sku}", add_to_cart, methods=["POST"]),
        Route("/login/{user}", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me),
    ],
    # secure=True (the default) needs HTTPS; the __Host- prefix is then on
    middleware=[Middleware(SessionMiddleware, store=make_store)],
)


if __name__ == "__main__":
    from starlette.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as http:
        http.post("/cart/sku-1")
        before = http.cookies["__Host-session"]
        http.post("/login/alice")
        after = http.cookies["__Host-session"]
        assert before != after
        print("me:", http.get("/me").json())
        http.post("/logout")
        assert http.get("/me").json() == {"user": None, "data": {}}
        print("logged out; cookie flags:", "HttpOnly, Secure, SameSite=Lax, Path=/")
