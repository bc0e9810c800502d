"""Rate limits over HTTP, free of any framework: the response headers and the refusal bodies.

Every web integration — the ASGI middleware and FastAPI dependency, Flask, Django — builds its
headers with `rate_limit_headers` and its ``429`` / ``503`` responses with an ``on_refused``
hook (`plain_text`, `json_error`, `problem_json` or your own), so they all answer alike. Public
for anyone writing another integration; it imports no web framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson

from .._async.ratelimit import AsyncRateLimiter
from .._core.ratelimit import Decision, combine
from .._errors import ConfigurationError
from .._sync.ratelimit import RateLimiter

__all__ = [
    "HEADER_STYLES",
    "HeaderStyle",
    "OnRefused",
    "Refusal",
    "RefusalResponse",
    "check_header_style",
    "json_error",
    "plain_text",
    "policy_names",
    "problem_json",
    "rate_limit_headers",
]

HeaderStyle = Literal["legacy", "draft", "both"]
HEADER_STYLES: tuple[HeaderStyle, ...] = ("legacy", "draft", "both")

# Structured Field integers (RFC 9651) have at most 15 digits; a limit may reach 10**15.
_SF_MAX_INT = 999_999_999_999_999


def _sf_int(value: int) -> int:
    return min(value, _SF_MAX_INT)


def _sf_string(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_names(limiter: RateLimiter | AsyncRateLimiter) -> tuple[str, ...]:
    """The names the draft headers give ``limiter``'s limits, in order.

    A limit's ``name`` when it has one; otherwise ``"default"`` for a single limit and
    ``"limit-<n>"`` (its position, from 1) inside a `MultiLimit`.

    Raises:
        ConfigurationError: a name is not printable ASCII (a Structured Field String cannot
            carry it), or two limits would get the same name.
    """
    policies = limiter.policies
    names = tuple(
        p.name or ("default" if len(policies) == 1 else f"limit-{i}")
        for i, p in enumerate(policies, 1)
    )
    for name in names:
        if not name.isascii() or not name.isprintable():
            raise ConfigurationError(
                f"the limit name {name!r} cannot be a RateLimit policy name: use printable "
                "ASCII, or the legacy header style"
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two limits would share a RateLimit policy name: {names}")
    return names


def check_header_style(style: object, limiter: RateLimiter | AsyncRateLimiter) -> HeaderStyle:
    """``style`` if it is one of `HEADER_STYLES` and ``limiter``'s limits can be named in it.

    Raises:
        ConfigurationError: an unknown style, or (draft styles) a limit name `policy_names`
            refuses.
    """
    for known in HEADER_STYLES:
        if style == known:
            if known != "legacy":
                policy_names(limiter)
            return known
    raise ConfigurationError(f"headers must be one of {HEADER_STYLES}, got {style!r}")


def _seconds(window: float) -> int:
    # whole seconds, at least 1 (the draft's w); to the microsecond first, so that a window of
    # 4 s computed as 4.000000000001 is not announced as 5
    return max(1, math.ceil(round(window, 6)))


def _reset(decision: Decision) -> int:
    """Seconds until the next unit: the retry delay when refused, else the full reset."""
    if decision.allowed:
        return math.ceil(decision.reset_after)
    return max(1, math.ceil(decision.retry_after))


def rate_limit_headers(
    limiter: RateLimiter | AsyncRateLimiter,
    decision: Decision | Sequence[Decision],
    *,
    style: HeaderStyle = "legacy",
) -> dict[str, str]:
    """The rate-limit response headers for ``limiter``'s ``decision``.

    ``legacy``: ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds until
    the full allowance is back). ``draft`` (draft-ietf-httpapi-ratelimit-headers):
    ``RateLimit-Policy: "default";q=100;w=60`` (each limit's quota and window) and
    ``RateLimit: "default";r=50;t=30`` (remaining, and seconds until more quota: the retry
    delay when refused, else the full reset). ``both``: all of them. A refused decision adds
    ``Retry-After``. Seconds are rounded up to whole seconds, so a client honouring them never
    comes back too early.

    Args:
        limiter: the limiter that decided (names and windows of its limits).
        decision: what `hit` or `peek` returned; for a `MultiLimit`, what ``hit_all``
            returned, so that the draft headers describe every limit (a single combined
            decision is described as the policy ``"default"``, without a window).
        style: ``"legacy"`` (default), ``"draft"`` or ``"both"``.

    Raises:
        ConfigurationError: an unknown style, or a limit name the draft headers cannot carry.
    """
    style = check_header_style(style, limiter)
    if isinstance(decision, Decision):
        decisions: Sequence[Decision] = [decision]
        combined = decision
    else:
        decisions = decision
        combined = combine(decisions)
    headers: dict[str, str] = {}
    if style != "draft":
        headers["RateLimit-Limit"] = str(combined.limit)
        headers["RateLimit-Remaining"] = str(combined.remaining)
        headers["RateLimit-Reset"] = str(math.ceil(combined.reset_after))
    if style != "legacy":
        policies = limiter.policies
        if len(decisions) == len(policies):
            names = policy_names(limiter)
            windows: Sequence[float | None] = [p.window for p in policies]
        else:  # one combined decision of several limits: which one bound is not known
            names, windows = ("default",), [None]
        headers["RateLimit-Policy"] = ", ".join(
            f"{_sf_string(name)};q={_sf_int(d.limit)}"
            + ("" if window is None else f";w={_seconds(window)}")
            for name, d, window in zip(names, decisions, windows, strict=True)
        )
        headers["RateLimit"] = ", ".join(
            f"{_sf_string(name)};r={_sf_int(d.remaining)};t={_reset(d)}"
            for name, d in zip(names, decisions, strict=True)
        )
    if not combined.allowed:
        headers["Retry-After"] = str(_reset(combined))
    return headers


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the integration will not pass on, given to the ``on_refused`` hook.

    Attributes:
        status: ``429`` (over the limit) or ``503`` (the limiter is unavailable and the
            integration fails closed).
        retry_after: whole seconds the client should wait (the ``Retry-After`` value).
        headers: the headers that go out with the response whatever the hook returns:
            ``Retry-After`` and, for a 429, the rate-limit headers of the chosen style.
        decision: the binding decision (``None`` for a 503).
        violated: the draft policy names of the limits that refused (empty for a 503).
    """

    status: int
    retry_after: int
    headers: Mapping[str, str]
    decision: Decision | None = None
    violated: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RefusalResponse:
    """What an ``on_refused`` hook answers: a status, a body and its content type.

    ``headers`` are added to (and may override) `Refusal.headers`; an integration always sends
    the rate-limit headers and ``Retry-After`` unless the hook overrides them by name.
    """

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


OnRefused = Callable[[Refusal], RefusalResponse]


def _title(status: int) -> str:
    return "Too Many Requests" if status == 429 else "Service Unavailable"


def _detail(refusal: Refusal) -> str:
    if refusal.status == 429:
        return f"Rate limit exceeded; retry after {refusal.retry_after} s."
    return f"The rate limiter is unavailable; retry after {refusal.retry_after} s."


def plain_text(refusal: Refusal) -> RefusalResponse:
    """The default: ``Too Many Requests`` (or ``Rate limiter unavailable``) as ``text/plain``."""
    body = "Too Many Requests" if refusal.status == 429 else "Rate limiter unavailable"
    return RefusalResponse(refusal.status, body.encode(), "text/plain; charset=utf-8")


def json_error(refusal: Refusal) -> RefusalResponse:
    """``{"error": "Too Many Requests", "detail": ..., "retry_after": 3}`` as JSON."""
    body = {
        "error": _title(refusal.status),
        "detail": _detail(refusal),
        "retry_after": refusal.retry_after,
    }
    return RefusalResponse(refusal.status, orjson.dumps(body), "application/json")


def problem_json(refusal: Refusal) -> RefusalResponse:
    """An RFC 9457 problem details object, ``application/problem+json``.

    ``{"type": "about:blank", "title": "Too Many Requests", "status": 429, "detail": "...",
    "violated-policies": ["default"]}``; the last member (the draft's name for it) lists the
    limits that refused and is left out of a 503.
    """
    body: dict[str, object] = {
        "type": "about:blank",
        "title": _title(refusal.status),
        "status": refusal.status,
        "detail": _detail(refusal),
    }
    if refusal.violated:
        body["violated-policies"] = list(refusal.violated)
    return RefusalResponse(refusal.status, orjson.dumps(body), "application/problem+json")
