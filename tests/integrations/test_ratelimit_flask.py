"""The Flask `rate_limit` decorator: 429 with headers, recovery, key function, fail open/closed."""

from __future__ import annotations

import logging
import time
from typing import Any

import flask
import pytest
import redis

from redis_patterns import (
    EmbeddedServer,
    FixedWindow,
    MultiLimit,
    RateLimiter,
    SlidingLog,
    TokenBucket,
)
from redis_patterns.integrations.ratelimit_flask import EXEMPT, Exempt, normalize_key, rate_limit
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
    anonymous = [http.get("/hello") for _ in range(3)]  # no user: limited by address
    assert [a.status_code for a in anonymous] == [200, 200, 429]
    assert anonymous[0].headers["RateLimit-Remaining"] == "1"


# --- hostile and missing keys (issue 13, item 4) -------------------------------------------

HOSTILE = ["a{b", "}", "{ratelimit:x}", "nul\x00byte", "x" * 2048, "\xff\xfe not utf-8"]


def test_hostile_header_keys_are_limited_never_a_500(backend: Backend, prefix: str) -> None:
    """Braces, NUL, 2 KiB or non-UTF-8 keys: admitted exactly `limit` times, then 429."""
    client = backend.client()
    limiter = SlidingLog(client, 2, 60.0, name=prefix)
    http = flask_app(limiter, key=lambda: flask.request.headers.get("X-API-Key")).test_client()
    for raw in HOSTILE:
        # WSGI carries header bytes as latin-1 text: "\xff" is the byte 0xff on the wire
        codes = [http.get("/hello", headers={"X-API-Key": raw}).status_code for _ in range(3)]
        assert codes == [200, 200, 429], raw
        assert client.zcard(limiter.keys(normalize_key(raw))[0]) == 2, raw


def test_hostile_query_keys_are_limited_never_a_500(backend: Backend, prefix: str) -> None:
    limiter = SlidingLog(backend.client(), 1, 60.0, name=prefix)
    http = flask_app(limiter, key=lambda: flask.request.args.get("user")).test_client()
    for query in ("%7B", "%7D", "%00", "%FF%FE", "a" * 2048, "{x}:y"):
        codes = [http.get(f"/hello?user={query}").status_code for _ in range(2)]
        assert codes == [200, 429], query


def test_missing_or_empty_key_falls_back_to_the_client_address(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    limiter = SlidingLog(client, 3, 60.0, name=prefix)
    http = flask_app(limiter, key=lambda: flask.request.headers.get("X-API-Key")).test_client()
    address = {"REMOTE_ADDR": "198.51.100.9"}
    codes = [
        http.get("/hello", environ_base=address).status_code,
        http.get("/hello", headers={"X-API-Key": ""}, environ_base=address).status_code,
        http.get("/hello", environ_base=address).status_code,
        http.get("/hello", headers={"X-API-Key": ""}, environ_base=address).status_code,
    ]
    assert codes == [200, 200, 200, 429]
    assert client.zcard(limiter.keys("198.51.100.9")[0]) == 3


def test_exempt_is_the_only_exemption(backend: Backend, prefix: str) -> None:
    limiter = SlidingLog(backend.client(), 1, 60.0, name=prefix)

    def key() -> str | Exempt:
        return EXEMPT if flask.request.args.get("internal") else "everyone"

    http = flask_app(limiter, key=key).test_client()
    free = [http.get("/hello?internal=1") for _ in range(3)]
    assert [f.status_code for f in free] == [200] * 3
    assert all("RateLimit-Limit" not in f.headers for f in free)
    assert [http.get("/hello").status_code for _ in range(2)] == [200, 429]


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


# --- both header styles and the on_refused hook (issue 17) -----------------------------------


def test_draft_headers_and_a_problem_json_refusal(backend: Backend, prefix: str) -> None:
    from redis_patterns.integrations.ratelimit_http import problem_json

    limiter = SlidingLog(backend.client(), 2, 60.0, name=prefix)
    http = flask_app(limiter, headers="both", on_refused=problem_json).test_client()
    answers = [http.get("/hello") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["RateLimit-Policy"] for a in answers] == [f'"{prefix}";q=2;w=60'] * 3
    assert answers[0].headers["RateLimit"] == f'"{prefix}";r=1;t=60'
    assert answers[0].headers["RateLimit-Remaining"] == "1"
    refused = answers[2]
    retry_after = refused.headers["Retry-After"]
    assert refused.headers["RateLimit"] == f'"{prefix}";r=0;t={retry_after}'
    assert refused.content_type == "application/problem+json"
    assert refused.json == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit exceeded; retry after {retry_after} s.",
        "violated-policies": [prefix],
    }


def test_the_default_refusal_is_plain_text(backend: Backend, prefix: str) -> None:
    http = flask_app(SlidingLog(backend.client(), 1, 60.0, name=prefix)).test_client()
    http.get("/hello")
    refused = http.get("/hello")
    assert (refused.status_code, refused.text) == (429, "Too Many Requests")
    assert refused.content_type == "text/plain; charset=utf-8"
