"""The Flask `rate_limit` decorator: 429 with headers, recovery, key function, fail open/closed."""

from __future__ import annotations

import logging
import time
from typing import Any

import flask
import pytest
import redis

from redis_patterns import EmbeddedServer, FixedWindow, MultiLimit, RateLimiter, TokenBucket
from redis_patterns.integrations.ratelimit_flask import rate_limit
from redis_patterns.testing.pytest_plugin import Backend


def flask_app(limiter: RateLimiter, **options: Any) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/hello")
    @rate_limit(limiter, **options)
    def hello() -> Any:
        return {"hello": "world"}

    @app.get("/free")
    def free() -> str:
        return "free"

    return app


def test_flask_429_with_headers_then_recovers(backend: Backend, prefix: str) -> None:
    limiter = FixedWindow(backend.client(), 3, 1.0, name=prefix)
    http = flask_app(limiter).test_client()
    # start at the beginning of a 1-second window, so all four land in the same one
    _, micros = backend.client().time()
    time.sleep(1 - micros / 1e6 + 0.01)
    answers = [http.get("/hello") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].json == {"hello": "world"}
    assert [a.headers["RateLimit-Limit"] for a in answers] == ["3"] * 4
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["RateLimit-Reset"] == "1" for a in answers)
    assert answers[3].headers["Retry-After"] == "1"
    assert http.get("/free").status_code == 200
    time.sleep(int(answers[3].headers["Retry-After"]))
    recovered = http.get("/hello")
    assert recovered.status_code == 200
    assert recovered.headers["RateLimit-Remaining"] == "2"


def test_custom_key_and_multi_limit(backend: Backend, prefix: str) -> None:
    client = backend.client()
    limiter = MultiLimit(
        [TokenBucket(client, 2, 1e-3, name=f"{prefix}-b"), FixedWindow(client, 100, 3600.0)]
    )
    http = flask_app(limiter, key=lambda: flask.request.headers.get("X-User")).test_client()
    codes = [http.get("/hello", headers={"X-User": "u1"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert http.get("/hello", headers={"X-User": "u2"}).status_code == 200
    anonymous = http.get("/hello")  # no user: exempt
    assert anonymous.status_code == 200
    assert "RateLimit-Limit" not in anonymous.headers


@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_server_fails_open_or_closed_and_logs(
    fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedServer().start()
    url = server.url
    server.stop()
    server.cleanup()
    client = redis.Redis.from_url(url, socket_timeout=1, retry=None)
    http = flask_app(FixedWindow(client, 1, 60.0), fail_open=fail_open).test_client()
    caplog.set_level(logging.WARNING, "redis_patterns.ratelimit")
    answers = [http.get("/hello") for _ in range(2)]
    assert [a.status_code for a in answers] == ([200] * 2 if fail_open else [503] * 2)
    records = [r for r in caplog.records if r.name == "redis_patterns.ratelimit"]
    assert len(records) == 1  # the same failure again within 60 s is counted, not logged
    assert all(("failing open" if fail_open else "failing closed") in r.message for r in records)
    client.close()


def test_refuses_an_async_limiter() -> None:
    from redis_patterns import AsyncFixedWindow

    limiter = AsyncFixedWindow.__new__(AsyncFixedWindow)
    with pytest.raises(TypeError, match="RateLimiter"):
        rate_limit(limiter)  # type: ignore[arg-type]


def test_bad_cost_is_refused_at_decoration(client: Any) -> None:
    from redis_patterns import ConfigurationError

    for cost in (0, 1.5, 4):
        with pytest.raises(ConfigurationError):
            rate_limit(FixedWindow(client, 3, 1.0), cost=cost)  # type: ignore[arg-type]
