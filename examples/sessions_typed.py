"""Typed sessions: FastAPI and Flask apps that ``mypy --strict`` checks with no ``Any`` and no
ignores, through ``get_session`` (the request's `RequestSession`, typed).

Run it as a script to exercise both apps with their test clients.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from flask import Flask

from redis_patterns import AsyncSessionStore, SessionStore, connect
from redis_patterns.integrations import sessions_asgi, sessions_flask
from redis_patterns.integrations.sessions_asgi import RequestSession, SessionMiddleware

# -- FastAPI: the session as a dependency ----------------------------------------------------

api = FastAPI()
api.add_middleware(
    SessionMiddleware,
    store=lambda: AsyncSessionStore(connect(asyncio=True), idle_ttl=1800),
    on_backend_error="anonymous",  # Redis down: serve the request logged out, write nothing
)
Session = Annotated[RequestSession, Depends(sessions_asgi.get_session)]


@api.post("/login/{user}")
async def api_login(user: str, session: Session) -> dict[str, str]:
    session.rotate(user_id=user)  # a new id at login (fixation defence)
    return {"user": user}


@api.get("/visit")
async def api_visit(session: Session) -> dict[str, int | str | None]:
    visits = int(session.get("visits", 0)) + 1  # values are what the app stored: say which
    session["visits"] = visits
    return {"user": session.user_id, "visits": visits}


@api.post("/logout")
async def api_logout(session: Session) -> dict[str, bool]:
    session.destroy()
    return {"ok": True}


# -- Flask: get_session() instead of flask.session --------------------------------------------

web = Flask(__name__)
web.session_interface = sessions_flask.RedisSessionInterface(
    SessionStore(connect(), idle_ttl=1800), refresh_each_request=False
)


@web.post("/login/<user>")
def web_login(user: str) -> dict[str, str]:
    session = sessions_flask.get_session()
    session.rotate(user_id=user)
    session.permanent = False  # "remember me" unticked: the cookie ends with the browser
    return {"user": user}


@web.get("/visit")
def web_visit() -> dict[str, int | str | None]:
    session = sessions_flask.get_session()
    visits = int(session.get("visits", 0)) + 1
    session["visits"] = visits
    return {"user": session.user_id, "visits": visits}


@web.post("/logout")
def web_logout() -> dict[str, bool]:
    sessions_flask.get_session().destroy()
    return {"ok": True}


def main() -> None:
    from fastapi.testclient import TestClient

    with TestClient(api, base_url="https://testserver") as http:
        http.post("/login/alice")
        http.get("/visit")
        assert http.get("/visit").json() == {"user": "alice", "visits": 2}
        http.post("/logout")
        assert http.get("/visit").json() == {"user": None, "visits": 1}

    client = web.test_client()
    base = "https://localhost"
    login = client.post("/login/bob", base_url=base)
    assert "Max-Age" not in login.headers["Set-Cookie"]  # a browser session cookie
    client.get("/visit", base_url=base)
    assert client.get("/visit", base_url=base).get_json() == {"user": "bob", "visits": 2}
    client.post("/logout", base_url=base)
    print("typed sessions: FastAPI and Flask OK")


if __name__ == "__main__":
    main()
