"""A session ended during a request stays dead: two real concurrent requests, on FastAPI under
uvicorn and on Flask under werkzeug's threaded server, both on a loopback port (issue 13, 2).

The slow request loads the session, then waits for the test's signal; meanwhile the session is
logged out, destroyed with ``destroy_user``, rotated by another request or expired. When the
slow request then changes the session (or rotates it), nothing of the old session may reappear
under a new id, and no live session of the user may be missing from the user's index.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from werkzeug.serving import make_server

from redis_patterns import AsyncSessionStore, SessionStore
from redis_patterns.integrations.sessions_asgi import SessionMiddleware
from redis_patterns.integrations.sessions_flask import RedisSessionInterface
from redis_patterns.testing.pytest_plugin import Backend

COOKIE = "session"  # secure=False (plain HTTP on loopback): no __Host- prefix
WAIT = 30.0  # seconds any one signal may take before the test fails (never reached when green)


class Gate:
    """The slow request says when it has loaded the session, then waits to be released."""

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.release = threading.Event()

    def wait_for_release(self) -> None:
        self.loaded.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the slow request")


def slow_change(session: Any, action: str) -> None:
    session["cart"] = "sku-1"
    if action == "rotate":
        session.rotate()  # a privilege change, as the request ends


def fastapi_app(backend: Backend, prefix: str, gate: Gate) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        SessionMiddleware,
        store=lambda: AsyncSessionStore(
            backend.async_client(), namespace=prefix, idle_ttl=60, absolute_ttl=3600
        ),
        secure=False,
    )

    @app.post("/login")
    async def login(request: Request, user: str) -> dict[str, str]:
        request.session["name"] = user
        request.session.rotate(user_id=user)  # type: ignore[attr-defined]
        return {}

    @app.post("/slow")
    async def slow(request: Request, action: str) -> dict[str, str]:
        await asyncio.to_thread(gate.wait_for_release)  # the loop serves other requests
        slow_change(request.session, action)
        return {}

    @app.post("/logout")
    async def logout(request: Request) -> dict[str, str]:
        request.session.destroy()  # type: ignore[attr-defined]
        return {}

    @app.post("/elevate")
    async def elevate(request: Request) -> dict[str, str]:
        request.session.rotate()  # type: ignore[attr-defined]
        return {}

    return app


def flask_app(backend: Backend, prefix: str, gate: Gate) -> flask.Flask:
    app = flask.Flask(__name__)
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60, absolute_ttl=3600)
    app.session_interface = RedisSessionInterface(store, secure=False)
    session: Any = flask.session

    @app.post("/login")
    def login() -> Any:
        user = flask.request.args["user"]
        session["name"] = user
        session.rotate(user_id=user)
        return {}

    @app.post("/slow")
    def slow() -> Any:
        len(session)  # the Flask session loads on first use
        gate.wait_for_release()
        slow_change(session, flask.request.args["action"])
        return {}

    @app.post("/logout")
    def logout() -> Any:
        session.destroy()
        return {}

    @app.post("/elevate")
    def elevate() -> Any:
        session.rotate()
        return {}

    return app


@contextlib.contextmanager
def served(framework: str, backend: Backend, prefix: str, gate: Gate) -> Iterator[str]:
    """The app on a real HTTP server on a free loopback port, in a thread; yields its URL."""
    if framework == "flask":
        wsgi = make_server("127.0.0.1", 0, flask_app(backend, prefix, gate), threaded=True)
        thread = threading.Thread(target=wsgi.serve_forever, name="werkzeug")
        thread.start()
        try:
            yield f"http://127.0.0.1:{wsgi.server_port}"
        finally:
            wsgi.shutdown()
            thread.join(WAIT)
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        fastapi_app(backend, prefix, gate), http="h11", ws="none", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:  # lifespan startup done, socket serving
            assert thread.is_alive(), "uvicorn stopped before serving"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        listener.close()
    assert not thread.is_alive()


def sid_of(response: httpx.Response) -> str:
    (header,) = response.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    assert name == COOKIE, header
    return rest.split(";", 1)[0]


def sessions_in(backend: Backend, store: SessionStore) -> dict[str, dict[bytes, bytes]]:
    """Every session hash of the store, by id, from a SCAN of every node."""
    found = {}
    client: Any = store.client
    for key in backend.scan(f"{{{store.namespace}:*}}:s:*"):
        bucket = key[1 : key.index(b"}")].rsplit(b":", 1)[1].decode()
        sid = f"{bucket}.{key.rsplit(b':s:', 1)[1].decode()}"
        fields = client.hgetall(key)
        if fields:
            found[sid] = fields
    return found


@pytest.mark.parametrize("action", ["write", "rotate"])
@pytest.mark.parametrize("interference", ["logout", "destroy_user", "rotated", "expired"])
@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_a_session_ended_during_a_request_stays_dead(
    backend: Backend, prefix: str, framework: str, interference: str, action: str
) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60, absolute_ttl=3600)
    gate = Gate()
    replies: dict[str, httpx.Response] = {}
    with served(framework, backend, prefix, gate) as url:
        with httpx.Client(base_url=url, timeout=WAIT) as http:
            sid = sid_of(http.post("/login", params={"user": "mallory"}))
            assert store.sessions_of("mallory") == [sid]
        cookie = {"Cookie": f"{COOKIE}={sid}"}

        def slow() -> None:
            with httpx.Client(base_url=url, timeout=WAIT) as own:
                replies["slow"] = own.post("/slow", params={"action": action}, headers=cookie)

        in_flight = threading.Thread(target=slow, name="slow request")
        in_flight.start()
        try:
            assert gate.loaded.wait(WAIT), "the slow request never loaded its session"
            replacement = None
            with httpx.Client(base_url=url, timeout=WAIT) as http:
                if interference == "logout":
                    assert http.post("/logout", headers=cookie).status_code == 200
                elif interference == "rotated":
                    replacement = sid_of(http.post("/elevate", headers=cookie))
            if interference == "destroy_user":
                assert store.destroy_user("mallory") == 1
            elif interference == "expired":
                key = store._core._key_of(sid)
                store.client.pexpire(key, 1)  # the server expires it, as at its deadline
                deadline = time.monotonic() + WAIT
                while store.client.exists(key):
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            assert store.get(sid) is None  # the loaded session has ended
        finally:
            gate.release.set()
            in_flight.join(WAIT)
        assert not in_flight.is_alive()

    answer = replies["slow"]
    assert answer.status_code == 200, answer.text
    live = sessions_in(backend, store)
    # nothing the slow request did, and nothing of the old session, lives under a new id ...
    assert not [s for s, fields in live.items() if b"cart" in fields], live
    assert [s for s, fields in live.items() if b"name" in fields] == (
        [replacement] if replacement else []
    )
    # ... and the index knows every live session of its user: destroy_user reaches them all
    for sid_, fields in live.items():
        if b":u" in fields:
            assert sid_ in store.sessions_of(fields[b":u"].decode())
    assert store.sessions_of("mallory") == ([replacement] if replacement else [])
    assert "set-cookie" not in answer.headers  # left alone: a login may just have set it
    assert store.destroy_user("mallory") == (1 if replacement else 0)
    assert sessions_in(backend, store) == {}
