"""Flask RedisSessionInterface: lazy load, cookie flags, login rotation, logout, forged cookies."""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any

import pytest
from flask import Flask, jsonify, request, session
from flask.testing import FlaskClient

from redis_patterns import ConfigurationError, SessionStore
from redis_patterns.integrations.sessions_flask import RedisSessionInterface
from redis_patterns.testing.pytest_plugin import Backend

COOKIE = "__Host-session"
BASE = "https://localhost"


def make_app(
    store: SessionStore, barrier: threading.Barrier | None = None, **options: Any
) -> Flask:
    app = Flask(__name__)
    app.session_interface = RedisSessionInterface(store, **options)

    def info() -> Any:
        return jsonify(id=session.id, user=session.user_id, data=dict(session))  # type: ignore[attr-defined]

    @app.get("/whoami")
    def whoami() -> Any:
        return info()

    @app.post("/put")
    def put() -> Any:
        len(session)  # load
        if barrier is not None:  # both requests have loaded the session before either writes
            barrier.wait(timeout=30)
        for key, value in request.args.items():
            session[key] = value
        return info()

    @app.post("/login")
    def login() -> Any:
        session.rotate(user_id=request.args["user"])  # type: ignore[attr-defined]
        session["role"] = "member"
        return info()

    @app.post("/relogin")
    def relogin() -> Any:
        session.clear()  # the classic idiom: forget everything, then start the new login
        session["greeting"] = "hello"
        session.rotate(user_id=request.args["user"])  # type: ignore[attr-defined]
        return info()

    @app.post("/logout")
    def logout() -> Any:
        session.destroy()  # type: ignore[attr-defined]
        return info()

    @app.get("/noop")
    def noop() -> Any:
        return "ok"

    return app


def cookie_of(response: Any) -> str:
    (header,) = response.headers.getlist("Set-Cookie")
    return str(header)


def sid_of(header: str) -> str:
    match = re.match(rf"{COOKIE}=([^;]*);", header)
    assert match, header
    return match.group(1)


def test_login_sets_secure_cookie_and_rotates(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60, absolute_ttl=3600)
    client: FlaskClient = make_app(store).test_client()
    first = client.post("/put?cart=3", base_url=BASE)
    header = cookie_of(first)
    parts = {p.strip().split("=")[0].lower() for p in header.split(";")}
    assert header.startswith(f"{COOKIE}=")
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= parts
    assert "domain" not in parts
    assert "SameSite=Lax" in header
    assert "Max-Age=60" in header
    anonymous = sid_of(header)

    logged_in = sid_of(cookie_of(client.post("/login?user=alice", base_url=BASE)))
    assert logged_in != anonymous
    assert store.get(anonymous) is None
    got = store.get(logged_in)
    assert got is not None
    assert got.user_id == "alice"
    assert dict(got) == {"cart": "3", "role": "member"}
    me = client.get("/whoami", base_url=BASE).get_json()
    assert me == {"id": logged_in, "user": "alice", "data": {"cart": "3", "role": "member"}}

    logout = client.post("/logout", base_url=BASE)
    assert "Max-Age=0" in cookie_of(logout)
    assert backend.client().exists(store._core._key_of(logged_in)) == 0
    assert client.get("/whoami", base_url=BASE).get_json() == {"id": None, "user": None, "data": {}}


@pytest.mark.parametrize(
    "forged",
    [f"{secrets.randbelow(4096):03x}.{secrets.token_urlsafe(32)}", "forged", "x" * 4000],
)
def test_forged_cookie_gets_a_fresh_anonymous_session(
    backend: Backend, prefix: str, forged: str
) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    victim = store.create({"secret": "yes"}, user_id="victim")
    client = make_app(store).test_client()
    client.set_cookie(COOKIE, forged, domain="localhost")
    response = client.get("/whoami", base_url=BASE)
    assert response.get_json() == {"id": None, "user": None, "data": {}}
    assert "Max-Age=0" in cookie_of(response)
    client.set_cookie(COOKIE, forged, domain="localhost")
    fresh = sid_of(cookie_of(client.post("/put?a=1", base_url=BASE)))
    assert fresh != forged
    got = store.get(fresh)
    assert got is not None
    assert got.user_id is None
    assert dict(got) == {"a": "1"}
    assert store.get(victim.id) is not None


def test_expired_cookie_gets_a_fresh_session(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=0.3)
    old = store.create({"a": 1}, user_id="bob")
    deadline = time.monotonic() + 10
    while store.ttl(old.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    client = make_app(store).test_client()
    client.set_cookie(COOKIE, old.id, domain="localhost")
    assert client.get("/whoami", base_url=BASE).get_json() == {"id": None, "user": None, "data": {}}


def test_untouched_session_is_never_loaded(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    client = make_app(store).test_client()
    sid = sid_of(cookie_of(client.post("/put?a=1", base_url=BASE)))
    with backend.counter() as seen:
        response = client.get("/noop", base_url=BASE)
    assert seen.count == 0  # lazy: the view never used the session
    assert "Set-Cookie" not in response.headers
    with backend.counter() as seen:
        client.get("/whoami", base_url=BASE)
    assert seen.names == ["EVALSHA"]
    assert store.get(sid) is not None


def test_concurrent_requests_keep_both_changes(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    made = store.create({"base": 1})
    app = make_app(store, barrier=threading.Barrier(2))
    results: list[int] = []

    def call(params: str) -> None:
        client = app.test_client()
        client.set_cookie(COOKIE, made.id, domain="localhost")
        results.append(client.post(f"/put?{params}", base_url=BASE).status_code)

    threads = [threading.Thread(target=call, args=(p,)) for p in ("theme=dark", "lang=fr")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200, 200]
    got = store.get(made.id)
    assert got is not None
    assert dict(got) == {"base": 1, "theme": "dark", "lang": "fr"}


def test_plain_http_when_secure_is_off(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    client = make_app(store, secure=False).test_client()
    header = cookie_of(client.post("/put?a=1"))
    assert header.startswith("session=")
    assert "Secure" not in header
    assert client.get("/whoami").get_json()["data"] == {"a": "1"}


def test_bad_cookie_settings_are_refused(client: Any) -> None:
    store = SessionStore(client)
    with pytest.raises(ConfigurationError):
        RedisSessionInterface(store, samesite="none", secure=False)
    with pytest.raises(ConfigurationError):
        RedisSessionInterface(store, host_prefix=True, domain="example.com")


def test_clear_then_set_starts_a_new_session(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    client = make_app(store).test_client()
    old = sid_of(cookie_of(client.post("/put?cart=1", base_url=BASE)))
    new = sid_of(cookie_of(client.post("/relogin?user=ann", base_url=BASE)))
    assert new != old
    assert backend.client().exists(store._core._key_of(old)) == 0
    got = store.get(new)
    assert got is not None
    assert got.user_id == "ann"
    assert dict(got) == {"greeting": "hello"}
