"""Flask app with server-side sessions: ``flask.session`` lives in Redis, one hash per session.

Run it as a script to exercise it with Flask's test client; serve it with ``flask run``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, session

from redis_patterns import SessionStore, connect
from redis_patterns.integrations.sessions_flask import RedisSessionInterface

app = Flask(__name__)
store = SessionStore(connect(), idle_ttl=1800, absolute_ttl=8 * 3600)
# secure=True (the default) needs HTTPS; pass secure=False for plain-HTTP local development
app.session_interface = RedisSessionInterface(store)


@app.post("/login/<user>")
def login(user: str) -> dict[str, Any]:
    session.rotate(user_id=user)  # type: ignore[attr-defined]
    return {"user": user}


@app.get("/visit")
def visit() -> dict[str, Any]:
    session["visits"] = session.get("visits", 0) + 1  # only this field is written back
    return {"user": session.user_id, "visits": session["visits"]}  # type: ignore[attr-defined]


@app.post("/logout")
def logout() -> dict[str, Any]:
    session.destroy()  # type: ignore[attr-defined]
    return {}


if __name__ == "__main__":
    http = app.test_client()
    base = "https://localhost"
    http.post("/login/alice", base_url=base)
    http.get("/visit", base_url=base)
    print(http.get("/visit", base_url=base).get_json())
    http.post("/logout", base_url=base)
    assert http.get("/visit", base_url=base).get_json()["user"] is None
