"""Django's `rate_limit` decorator and `RateLimitMiddleware` through Django's test clients: sync
and async views, both header styles, the on_refused hook, keys (hostile, missing, proxied),
failures and settings; each test's settings are an `override_settings` undone after it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_patterns import (
    AsyncFixedWindow,
    AsyncSlidingLog,
    EmbeddedServer,
    FixedWindow,
    MultiLimit,
    RateLimiter,
    SlidingLog,
    TokenBucket,
)
from redis_patterns.testing.pytest_plugin import Backend

pytest.importorskip("django")

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client
from django.test.utils import override_settings
from django.urls import path

from redis_patterns.integrations.django.ratelimit import (
    EXEMPT,
    Exempt,
    RateLimitMiddleware,
    forwarded_for,
    normalize_key,
    rate_limit,
)
from redis_patterns.integrations.ratelimit_http import problem_json

if not settings.configured:  # the minimum; everything a test needs is overridden per test
    settings.configure(SECRET_KEY="redis-patterns tests")
django.setup()

MIDDLEWARE = "redis_patterns.integrations.django.ratelimit.RateLimitMiddleware"
HOSTILE = ["a{b", "}", "{ratelimit:x}", "nul\x00byte", "x" * 2048, "\xff\xfe not utf-8"]

# settings may name a limiter by its dotted path: the tests put theirs here (monkeypatch)
LIMITER: Any = None
ASYNC_LIMITER: Any = None


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hi", headers={"X-View": "1"})


async def ahello(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"hello": "async"})


class URLconf:
    """A URLconf that is not a module: one per test (Django caches resolvers per URLconf)."""

    def __init__(self, urlpatterns: list[Any]) -> None:
        self.urlpatterns = urlpatterns


@pytest.fixture
def site() -> Iterator[Callable[..., None]]:
    """``site(routes, **settings)`` serves ``routes`` ({path: view}) for this test only."""
    overrides: list[override_settings] = []

    def serve(routes: dict[str, Callable[..., Any]], **extra: Any) -> None:
        urlconf = URLconf([path(p, view) for p, view in routes.items()])
        options = {"ALLOWED_HOSTS": ["testserver"], "MIDDLEWARE": [], **extra}
        override = override_settings(ROOT_URLCONF=urlconf, **options)
        override.enable()
        overrides.append(override)

    yield serve
    for override in reversed(overrides):
        override.disable()


def statuses(client: Client, url: str, count: int, **kwargs: Any) -> list[int]:
    return [client.get(url, **kwargs).status_code for _ in range(count)]


# --- the decorator --------------------------------------------------------------------------


def test_sync_view_429_with_headers(
    backend: Backend, prefix: str, site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = SlidingLog(backend.client(), 3, 60.0, name=prefix)
    site({"a": rate_limit(limiter)(hello), "free": hello})
    http = Client()
    caplog.set_level(logging.INFO)
    answers = [http.get("/a") for _ in range(4)]
    assert caplog.records == []  # not one django.request warning per 429
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].content == b"hi"
    assert answers[0].headers["X-View"] == "1"
    assert [a.headers["RateLimit-Limit"] for a in answers] == ["3"] * 4
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert [a.headers["RateLimit-Reset"] for a in answers] == ["60"] * 4
    assert "Retry-After" not in answers[0].headers
    assert 55 <= int(answers[3].headers["Retry-After"]) <= 60
    assert answers[3].content == b"Too Many Requests"
    assert answers[3].headers["Content-Type"] == "text/plain; charset=utf-8"
    free = http.get("/free")
    assert free.status_code == 200
    assert "RateLimit-Limit" not in free.headers


async def test_async_view_with_an_async_limiter(backend: Backend, prefix: str, site: Any) -> None:
    client = backend.async_client()

    async def by_user(request: HttpRequest) -> str | None:
        user: str | None = request.headers.get("X-User")
        return user

    limiter = AsyncSlidingLog(client, 2, 60.0, name=prefix)
    site({"a": rate_limit(limiter, key=by_user, headers="draft")(ahello)})
    http = AsyncClient()
    answers = [await http.get("/a", headers={"X-User": "u1"}) for _ in range(3)]
    other = await http.get("/a", headers={"X-User": "u2"})
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].json() == {"hello": "async"}
    assert answers[0].headers["RateLimit"] == f'"{prefix}";r=1;t=60'
    assert answers[0].headers["RateLimit-Policy"] == f'"{prefix}";q=2;w=60'
    assert "RateLimit-Limit" not in answers[0].headers
    assert answers[2].headers["RateLimit"] == (
        f'"{prefix}";r=0;t={answers[2].headers["Retry-After"]}'
    )
    assert other.status_code == 200
    await client.aclose()


async def test_async_view_with_a_sync_limiter(backend: Backend, prefix: str, site: Any) -> None:
    limiter = SlidingLog(backend.client(), 2, 60.0, name=prefix)
    site({"a": rate_limit(limiter)(ahello)})
    http = AsyncClient()
    assert [(await http.get("/a")).status_code for _ in range(3)] == [200, 200, 429]


def test_a_sync_view_refuses_an_async_limiter(backend: Backend, site: Any) -> None:
    site({"a": rate_limit(AsyncFixedWindow(backend.async_client(), 1, 1.0))(hello)})
    with pytest.raises(TypeError, match="hello is a sync view: it needs a sync RateLimiter"):
        Client().get("/a")


def test_bad_options_fail_at_decoration(backend: Backend) -> None:
    from redis_patterns import ConfigurationError

    limiter = FixedWindow(backend.client(), 3, 1.0)
    for cost in (0, 1.5, 4):
        with pytest.raises(ConfigurationError):
            rate_limit(limiter, cost=cost)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        rate_limit(limiter, headers="ietf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RateLimiter"):
        rate_limit(object())  # type: ignore[arg-type]


def test_multi_limit_and_problem_json(backend: Backend, prefix: str, site: Any) -> None:
    client = backend.client()
    limiter: RateLimiter = MultiLimit(
        [
            TokenBucket(client, 2, 1e-3, name=f"{prefix}-burst"),
            FixedWindow(client, 100, 3600.0, name=f"{prefix}-hourly"),
        ]
    )
    site({"a": rate_limit(limiter, headers="both", on_refused=problem_json)(hello)})
    http = Client()
    answers = [http.get("/a") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Policy"] == (
        f'"{prefix}-burst";q=2;w=2000, "{prefix}-hourly";q=100;w=3600'
    )
    assert answers[0].headers["RateLimit-Remaining"] == "1"
    refused = answers[2]
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["violated-policies"] == [f"{prefix}-burst"]
    assert refused.json()["status"] == 429


# --- keys ------------------------------------------------------------------------------------


def test_hostile_header_keys_are_limited_never_a_500(
    backend: Backend, prefix: str, site: Any
) -> None:
    client = backend.client()
    limiter = SlidingLog(client, 2, 60.0, name=prefix)

    def api_key(request: HttpRequest) -> str | None:
        value: str | None = request.headers.get("X-API-Key")
        return value

    site({"a": rate_limit(limiter, key=api_key)(hello)})
    http = Client()
    for raw in HOSTILE:
        assert statuses(http, "/a", 3, headers={"X-API-Key": raw}) == [200, 200, 429], raw
        assert client.zcard(limiter.keys(normalize_key(raw))[0]) == 2, raw


async def test_hostile_keys_on_an_async_view(backend: Backend, prefix: str, site: Any) -> None:
    client = backend.async_client()
    limiter = AsyncSlidingLog(client, 1, 60.0, name=prefix)
    site({"a": rate_limit(limiter, key=lambda r: r.GET.get("user"))(ahello)})
    http = AsyncClient()
    for query in ("%7B", "%7D", "%00", "%FF%FE", "a" * 2048, "{x}:y"):
        got = [(await http.get(f"/a?user={query}")).status_code for _ in range(2)]
        assert got == [200, 429], query
    await client.aclose()


def test_missing_key_falls_back_to_remote_addr_and_exempt_exempts(
    backend: Backend, prefix: str, site: Any
) -> None:
    client = backend.client()
    limiter = SlidingLog(client, 2, 60.0, name=prefix)

    def key(request: HttpRequest) -> str | Exempt | None:
        if request.GET.get("internal"):
            return EXEMPT
        value: str | None = request.headers.get("X-API-Key")  # None, or "" when sent empty
        return value

    site({"a": rate_limit(limiter, key=key)(hello)})
    http = Client(REMOTE_ADDR="198.51.100.9")
    got = statuses(http, "/a", 1) + statuses(http, "/a", 2, headers={"X-API-Key": ""})
    assert got == [200, 200, 429]
    assert client.zcard(limiter.keys("198.51.100.9")[0]) == 2
    free = [http.get("/a?internal=1") for _ in range(3)]
    assert [f.status_code for f in free] == [200] * 3
    assert all("RateLimit-Limit" not in f.headers for f in free)


def test_forwarded_for_trusts_only_what_the_proxies_appended(
    backend: Backend, prefix: str, site: Any
) -> None:
    client = backend.client()
    limiter = SlidingLog(client, 2, 60.0, name=prefix)
    site({"a": rate_limit(limiter, key=forwarded_for(1))(hello)})
    http = Client(REMOTE_ADDR="10.0.0.1")  # the proxy
    got = [
        http.get("/a", headers={"X-Forwarded-For": f"{spoof}203.0.113.7"}).status_code
        for spoof in ("", "1.1.1.1, ", "2.2.2.2, ")  # the client cannot pick another address
    ]
    assert got == [200, 200, 429]
    assert client.zcard(limiter.keys("203.0.113.7")[0]) == 2
    assert statuses(http, "/a", 3) == [200, 200, 429]  # no header: the peer (10.0.0.1)
    assert client.zcard(limiter.keys("10.0.0.1")[0]) == 2


# --- failures ---------------------------------------------------------------------------------


def dead_url() -> str:
    server = EmbeddedServer().start()
    url = server.url
    server.stop()
    server.cleanup()
    return url


@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_server_fails_open_or_closed_and_logs_once(
    fail_open: bool, site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    client = redis.Redis.from_url(dead_url(), socket_timeout=1, retry=None)
    site({"a": rate_limit(FixedWindow(client, 1, 60.0), fail_open=fail_open)(hello)})
    caplog.set_level(logging.WARNING, "redis_patterns.ratelimit")
    answers = [Client().get("/a") for _ in range(3)]
    assert [a.status_code for a in answers] == ([200] * 3 if fail_open else [503] * 3)
    assert all("RateLimit-Limit" not in a.headers for a in answers)
    if not fail_open:
        assert answers[0].headers["Retry-After"] == "1"
        assert answers[0].content == b"Rate limiter unavailable"
    records = [r for r in caplog.records if r.name == "redis_patterns.ratelimit"]
    assert len(records) == 1
    client.close()


# --- the middleware ------------------------------------------------------------------------------


def test_middleware_limits_its_paths_with_settings(
    backend: Backend, prefix: str, site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.LIMITER", SlidingLog(backend.client(), 2, 60.0, name=prefix))
    site(
        {"api/a": hello, "api/b": hello, "apix": hello, "home": hello},
        MIDDLEWARE=[MIDDLEWARE],
        REDIS_PATTERNS_RATELIMIT={
            "LIMITER": f"{__name__}.LIMITER",
            "KEY": lambda request: request.headers.get("X-API-Key"),
            "PATHS": ["/api"],
            "HEADERS": "both",
            "ON_REFUSED": "redis_patterns.integrations.ratelimit_http.problem_json",
        },
    )
    http = Client()
    got = [http.get(p, headers={"X-API-Key": "k"}) for p in ("/api/a", "/api/b", "/api/a")]
    assert [g.status_code for g in got] == [200, 200, 429]
    assert got[0].headers["X-View"] == "1"
    assert got[0].headers["RateLimit-Remaining"] == "1"
    assert got[0].headers["RateLimit"] == f'"{prefix}";r=1;t=60'
    assert got[2].headers["Content-Type"] == "application/problem+json"
    assert statuses(http, "/apix", 3) + statuses(http, "/home", 3) == [200] * 6
    assert "RateLimit-Limit" not in http.get("/home").headers


async def test_async_middleware_with_an_async_limiter(
    backend: Backend, prefix: str, site: Any
) -> None:
    client = backend.async_client()
    site(
        {"a": ahello, "s": hello},  # an async and a sync view behind one async middleware
        MIDDLEWARE=[MIDDLEWARE],
        REDIS_PATTERNS_RATELIMIT={"LIMITER": AsyncSlidingLog(client, 3, 60.0, name=prefix)},
    )
    http = AsyncClient()
    got = [await http.get(p) for p in ("/a", "/s", "/a", "/s")]
    assert [g.status_code for g in got] == [200, 200, 200, 429]
    assert [g.headers["RateLimit-Remaining"] for g in got] == ["2", "1", "0", "0"]
    await client.aclose()


async def test_async_middleware_with_a_sync_limiter(
    backend: Backend, prefix: str, site: Any
) -> None:
    site(
        {"a": ahello},
        MIDDLEWARE=[MIDDLEWARE],
        REDIS_PATTERNS_RATELIMIT={"LIMITER": SlidingLog(backend.client(), 1, 60.0, name=prefix)},
    )
    http = AsyncClient()
    assert [(await http.get("/a")).status_code for _ in range(2)] == [200, 429]


def test_a_decorated_view_behind_the_middleware_sends_its_own_headers(
    backend: Backend, prefix: str, site: Any
) -> None:
    client = backend.client()
    inner = SlidingLog(client, 2, 60.0, name=f"{prefix}-login")
    site(
        {"login": rate_limit(inner)(hello)},
        MIDDLEWARE=[MIDDLEWARE],
        REDIS_PATTERNS_RATELIMIT={"LIMITER": SlidingLog(client, 10, 60.0, name=prefix)},
    )
    answers = [Client().get("/login") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["RateLimit-Limit"] for a in answers] == ["2"] * 3  # the tighter one's


class LoginLimit(RateLimitMiddleware):
    setting = "LOGIN_RATELIMIT"


def test_a_subclass_reads_its_own_setting(backend: Backend, prefix: str, site: Any) -> None:
    client = backend.client()
    site(
        {"login": hello, "other": hello},
        MIDDLEWARE=[f"{__name__}.LoginLimit", MIDDLEWARE],
        LOGIN_RATELIMIT={
            "LIMITER": SlidingLog(client, 1, 60.0, name=f"{prefix}-l"),
            "PATHS": ["/login"],
        },
        REDIS_PATTERNS_RATELIMIT={"LIMITER": SlidingLog(client, 3, 60.0, name=prefix)},
    )
    http = Client()
    # the outer limit refuses the second login before the inner one counts it
    assert statuses(http, "/login", 2) + statuses(http, "/other", 3) == [200, 429, 200, 200, 429]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "needs settings.REDIS_PATTERNS_RATELIMIT"),
        ({}, "needs LIMITER"),
        ({"LIMITER": "LIMIT", "RATE": 1}, "unknown options \\['RATE'\\]"),
        ({"LIMITER": "no.such.module.limiter"}, "cannot import"),
        ({"LIMITER": 42}, "must be a RateLimiter or an AsyncRateLimiter"),
        ({"LIMITER": "LIMIT", "COST": 11}, "cost 11 exceeds"),
        ({"LIMITER": "LIMIT", "HEADERS": "ietf"}, "headers must be one of"),
        ({"LIMITER": "LIMIT", "PATHS": ["api"]}, "starting with /"),
        ({"LIMITER": "LIMIT", "KEY": 7}, "KEY'\\] must be callable"),
        ({"LIMITER": "ASYNC"}, "needs an async \\(ASGI\\) middleware chain"),
    ],
)
def test_bad_settings_are_improperly_configured(
    backend: Backend,
    site: Any,
    config: dict[str, Any] | None,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(f"{__name__}.LIMITER", FixedWindow(backend.client(), 10, 1.0))
    monkeypatch.setattr(
        f"{__name__}.ASYNC_LIMITER", AsyncFixedWindow(backend.async_client(), 10, 1.0)
    )
    if config is not None and config.get("LIMITER") in ("LIMIT", "ASYNC"):
        name = "LIMITER" if config["LIMITER"] == "LIMIT" else "ASYNC_LIMITER"
        config = {**config, "LIMITER": f"{__name__}.{name}"}
    extra = {} if config is None else {"REDIS_PATTERNS_RATELIMIT": config}
    site({"a": hello}, MIDDLEWARE=[MIDDLEWARE], **extra)
    with pytest.raises(ImproperlyConfigured, match=message):
        Client().get("/a")


async def test_class_based_views_with_method_decorator(
    backend: Backend, prefix: str, site: Any
) -> None:
    from django.utils.decorators import method_decorator
    from django.views import View

    limiter = SlidingLog(backend.client(), 1, 60.0, name=prefix)
    client = backend.async_client()
    async_limiter = AsyncSlidingLog(client, 1, 60.0, name=f"{prefix}-a")

    @method_decorator(rate_limit(limiter), name="get")
    class Sync(View):  # type: ignore[misc]  # Django ships no types
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("sync")

    @method_decorator(rate_limit(async_limiter), name="get")
    class Async(View):  # type: ignore[misc]
        async def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("async")

    site({"s": Sync.as_view(), "a": Async.as_view()})
    assert statuses(Client(), "/s", 2) == [200, 429]
    http = AsyncClient()
    assert [(await http.get("/a")).status_code for _ in range(2)] == [200, 429]
    await client.aclose()
