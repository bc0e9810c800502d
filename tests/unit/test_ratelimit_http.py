"""The framework-free HTTP side of rate limits: headers of both styles, refusal bodies, proxy
addresses, path prefixes and the guard's checks; no server (the clients never connect)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import redis_patterns as rp
from redis_patterns import ConfigurationError, Decision
from redis_patterns.integrations._ratelimit_guard import AsyncGuard, Guard, Paths
from redis_patterns.integrations.ratelimit_http import (
    Refusal,
    RefusalResponse,
    json_error,
    plain_text,
    policy_names,
    problem_json,
    rate_limit_headers,
)
from redis_patterns.integrations.ratelimit_keys import forwarded_client

CLIENT = rp.connect("redis://127.0.0.1:1/0")  # never used: nothing here does I/O

ALLOWED = Decision(True, 100, 50, 0.0, 29.2)
REFUSED = Decision(False, 100, 0, 2.5, 30.0)


def test_legacy_headers() -> None:
    limiter = rp.FixedWindow(CLIENT, 100, 60)
    assert rate_limit_headers(limiter, ALLOWED) == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "50",
        "RateLimit-Reset": "30",
    }
    refused = rate_limit_headers(limiter, Decision(False, 10, 0, 0.01, 0.01))
    assert refused["Retry-After"] == "1"  # never 0 on a refusal
    assert refused["RateLimit-Reset"] == "1"


def test_draft_headers_have_the_drafts_syntax() -> None:
    limiter = rp.FixedWindow(CLIENT, 100, 60)
    assert rate_limit_headers(limiter, ALLOWED, style="draft") == {
        "RateLimit-Policy": '"default";q=100;w=60',
        "RateLimit": '"default";r=50;t=30',
    }
    # refused: t is the retry delay, so Retry-After is never earlier than t
    assert rate_limit_headers(limiter, REFUSED, style="draft") == {
        "RateLimit-Policy": '"default";q=100;w=60',
        "RateLimit": '"default";r=0;t=3',
        "Retry-After": "3",
    }


def test_both_styles_together() -> None:
    limiter = rp.SlidingLog(CLIENT, 100, 60, name="api")
    headers = rate_limit_headers(limiter, REFUSED, style="both")
    assert headers == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "30",
        "RateLimit-Policy": '"api";q=100;w=60',
        "RateLimit": '"api";r=0;t=3',
        "Retry-After": "3",
    }


def test_draft_windows_of_every_algorithm() -> None:
    def policy(limiter: rp.RateLimiter) -> str:
        return rate_limit_headers(limiter, Decision(True, 1, 0, 0, 0), style="draft")[
            "RateLimit-Policy"
        ]

    assert policy(rp.SlidingWindow(CLIENT, 10, 3600)).endswith(";w=3600")
    assert policy(rp.TokenBucket(CLIENT, 10, 2.5)).endswith(";w=4")  # refills in 4 s
    assert policy(rp.TokenBucket(CLIENT, 10, 3)).endswith(";w=4")  # 3.33 s, rounded up
    assert policy(rp.GCRA(CLIENT, 100, 60, burst=20)).endswith(";w=12")
    assert policy(rp.FixedWindow(CLIENT, 5, 0.001)).endswith(";w=1")  # never 0


def test_multi_limit_describes_every_limit() -> None:
    limiter = rp.MultiLimit(
        [rp.TokenBucket(CLIENT, 10, 10, name="burst"), rp.SlidingWindow(CLIENT, 1000, 3600)]
    )
    decisions = [Decision(True, 10, 9, 0.0, 0.1), Decision(True, 1000, 990, 0.0, 3600.0)]
    headers = rate_limit_headers(limiter, decisions, style="both")
    assert headers["RateLimit-Policy"] == '"burst";q=10;w=1, "limit-2";q=1000;w=3600'
    assert headers["RateLimit"] == '"burst";r=9;t=1, "limit-2";r=990;t=3600'
    assert headers["RateLimit-Remaining"] == "9"  # the binding (tightest) one
    # one combined decision: which limit bound is unknown, so no window is claimed
    combined = rate_limit_headers(limiter, decisions[0], style="draft")
    assert combined["RateLimit-Policy"] == '"default";q=10'


def test_numbers_stay_structured_field_integers() -> None:
    limiter = rp.TokenBucket(CLIENT, 10**15, 10**7)
    headers = rate_limit_headers(limiter, Decision(True, 10**15, 10**15, 0, 0), style="draft")
    assert headers["RateLimit"] == '"default";r=999999999999999;t=0'  # 15 digits at most
    assert headers["RateLimit-Policy"] == '"default";q=999999999999999;w=100000000'


def test_policy_names_escape_and_refuse() -> None:
    assert policy_names(rp.FixedWindow(CLIENT, 1, 1, name='say "hi" \\o/')) == ('say "hi" \\o/',)
    headers = rate_limit_headers(
        rp.FixedWindow(CLIENT, 1, 1, name='a"b\\c'), ALLOWED, style="draft"
    )
    assert headers["RateLimit"].startswith('"a\\"b\\\\c";')
    non_ascii = rp.FixedWindow(CLIENT, 1, 1, name="lîmit")
    with pytest.raises(ConfigurationError, match="printable ASCII"):
        rate_limit_headers(non_ascii, ALLOWED, style="draft")
    assert "RateLimit-Limit" in rate_limit_headers(non_ascii, ALLOWED)  # legacy: any name
    clash = rp.MultiLimit(
        [rp.FixedWindow(CLIENT, 1, 1, name="limit-2"), rp.FixedWindow(CLIENT, 2, 1)]
    )
    with pytest.raises(ConfigurationError, match="share"):
        policy_names(clash)


@pytest.mark.parametrize("style", ["Draft", "ietf", "", None, 1])
def test_unknown_style_is_refused(style: Any) -> None:
    with pytest.raises(ConfigurationError, match="headers must be one of"):
        rate_limit_headers(rp.FixedWindow(CLIENT, 1, 1), ALLOWED, style=style)


def test_refusal_bodies() -> None:
    refusal = Refusal(429, 3, {"Retry-After": "3"}, REFUSED, ("default",))
    assert plain_text(refusal) == RefusalResponse(
        429, b"Too Many Requests", "text/plain; charset=utf-8"
    )
    as_json = json_error(refusal)
    assert (as_json.status, as_json.content_type) == (429, "application/json")
    assert json.loads(as_json.body) == {
        "error": "Too Many Requests",
        "detail": "Rate limit exceeded; retry after 3 s.",
        "retry_after": 3,
    }
    problem = problem_json(refusal)
    assert problem.content_type == "application/problem+json"
    assert json.loads(problem.body) == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded; retry after 3 s.",
        "violated-policies": ["default"],
    }
    unavailable = Refusal(503, 1, {"Retry-After": "1"})
    assert plain_text(unavailable).body == b"Rate limiter unavailable"
    assert json.loads(problem_json(unavailable).body) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The rate limiter is unavailable; retry after 1 s.",
    }


@pytest.mark.parametrize(
    ("header", "proxies", "expected"),
    [
        (None, 1, None),
        ("", 1, None),
        ("203.0.113.7", 1, "203.0.113.7"),
        ("spoofed, 203.0.113.7", 1, "203.0.113.7"),  # the client wrote the left part
        ("spoofed, 203.0.113.7, 10.0.0.2", 2, "203.0.113.7"),
        ("203.0.113.7", 2, None),  # did not come through both proxies
        ("x,, 203.0.113.7 ,", 1, "203.0.113.7"),
    ],
)
def test_forwarded_client(header: str | None, proxies: int, expected: str | None) -> None:
    assert forwarded_client(header, proxies) == expected


@pytest.mark.parametrize("proxies", [0, -1, 1.0, True, "1"])
def test_forwarded_client_refuses_bad_counts(proxies: Any) -> None:
    with pytest.raises(ConfigurationError):
        forwarded_client("a", proxies)


def test_path_prefixes_match_on_segment_boundaries() -> None:
    paths = Paths(["/api", "/login/"])
    assert "/api" in paths
    assert "/api/users" in paths
    assert "/login" in paths
    assert "/login/x" in paths
    assert "/apix" not in paths
    assert "/" not in paths
    assert "/anything" in Paths(None)
    assert "/anything" in Paths(["/"])
    for bad in ([], ["api"], [b"/api"]):
        with pytest.raises(ConfigurationError):
            Paths(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        Paths("/api")


def test_guard_checks_its_options_before_any_request() -> None:
    limiter = rp.FixedWindow(CLIENT, 3, 1)
    with pytest.raises(TypeError, match="AsyncRateLimiter"):
        AsyncGuard(limiter)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync"):
        Guard(rp.AsyncFixedWindow(rp.connect("redis://127.0.0.1:1/0", asyncio=True), 3, 1))  # type: ignore[arg-type]
    for cost in (0, 1.5, 4):
        with pytest.raises(ConfigurationError):
            Guard(limiter, cost=cost)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Guard(limiter, headers="ietf")
    with pytest.raises(ConfigurationError, match="printable ASCII"):
        Guard(rp.FixedWindow(CLIENT, 3, 1, name="ünïcode"), headers="draft")
    with pytest.raises(TypeError, match="callable"):
        Guard(limiter, on_refused="problem_json")  # type: ignore[arg-type]


def test_a_hook_must_return_a_refusal_response() -> None:
    guard = Guard(rp.FixedWindow(CLIENT, 3, 1), on_refused=lambda r: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="RefusalResponse"):
        guard._decided(Decision(False, 3, 0, 1.0, 1.0))
