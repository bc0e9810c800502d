"""Rate limits for Django: the `rate_limit` view decorator and `RateLimitMiddleware` (settings).

Both answer 429 with ``Retry-After`` and the rate-limit headers, as the ASGI and Flask
integrations do, for sync views (a sync `RateLimiter`) and async views (either kind).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from ..._async.ratelimit import AsyncRateLimiter
from ..._errors import ConfigurationError
from ..._sync.ratelimit import RateLimiter
from .._ratelimit_guard import AsyncGuard, Guard, Paths, Verdict
from ..ratelimit_http import HeaderStyle, OnRefused, RefusalResponse, plain_text
from ..ratelimit_keys import EXEMPT, Exempt, forwarded_client, limiter_key, normalize_key

__all__ = [
    "EXEMPT",
    "Exempt",
    "KeyFunc",
    "RateLimitMiddleware",
    "forwarded_for",
    "normalize_key",
    "rate_limit",
    "remote_addr",
]

KeyResult = str | bytes | Exempt | None
KeyFunc = Callable[[HttpRequest], "KeyResult | Awaitable[KeyResult]"]
V = TypeVar("V", bound=Callable[..., Any])


def remote_addr(request: HttpRequest) -> str:
    """``REMOTE_ADDR``: the peer that connected (behind a proxy, see `forwarded_for`)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def forwarded_for(trusted_proxies: int = 1) -> Callable[[HttpRequest], str]:
    """A key function for apps behind ``trusted_proxies`` reverse proxies that each append to
    ``X-Forwarded-For``: the address the first proxy saw (`forwarded_client`), else
    ``REMOTE_ADDR``. Use it only when every request comes through those proxies: a client
    reaching the app directly could otherwise name any address.

    Raises:
        ConfigurationError: ``trusted_proxies`` is not an int >= 1.
    """
    forwarded_client(None, trusted_proxies)  # validates before any request

    def key(request: HttpRequest) -> str:
        header = request.META.get("HTTP_X_FORWARDED_FOR")
        return forwarded_client(header, trusted_proxies) or remote_addr(request)

    return key


def _guard(limiter: object, **options: Any) -> Guard | AsyncGuard:
    if isinstance(limiter, AsyncRateLimiter):
        return AsyncGuard(limiter, **options)
    if isinstance(limiter, RateLimiter):
        return Guard(limiter, **options)
    raise TypeError(
        f"limiter must be a RateLimiter or an AsyncRateLimiter, not {type(limiter).__name__}"
    )


def _key(request: HttpRequest, who: object) -> bytes | None:
    return limiter_key(who, lambda: remote_addr(request))


def _sync_verdict(guard: Guard, key: KeyFunc, request: HttpRequest) -> Verdict:
    who = key(request)
    if inspect.isawaitable(who):
        raise TypeError("the key function of a sync view or middleware must not be async")
    return guard.check(_key(request, who))


async def _async_verdict(guard: Guard | AsyncGuard, key: KeyFunc, request: HttpRequest) -> Verdict:
    who = key(request)
    if inspect.isawaitable(who):
        who = await who
    limited = _key(request, who)
    if isinstance(guard, AsyncGuard):
        return await guard.check(limited)
    # a sync client in an async view: off the event loop, as Django runs sync code
    return await sync_to_async(guard.check, thread_sensitive=False)(limited)


def _refused(refusal: RefusalResponse) -> HttpResponse:
    response = HttpResponse(
        refusal.body,
        status=refusal.status,
        content_type=refusal.content_type,
        headers=dict(refusal.headers),
    )
    # Django logs a warning for every 4xx/5xx response (``django.request``): a flood of 429s
    # would write one line per refused request. The marker is Django's own "already logged";
    # an outage is logged by this library, coalesced.
    response._has_been_logged = True
    return response


def _admitted(response: HttpResponse, headers: Mapping[str, str]) -> HttpResponse:
    for name, value in headers.items():
        if name not in response:  # the view's own (or an inner limit's) headers win
            response[name] = value
    return response


def rate_limit(
    limiter: RateLimiter | AsyncRateLimiter,
    *,
    key: KeyFunc = remote_addr,
    cost: int = 1,
    fail_open: bool = True,
    headers: HeaderStyle = "legacy",
    on_refused: OnRefused = plain_text,
) -> Callable[[V], V]:
    """Decorate a Django view (sync or async) so that each call is one hit on ``limiter``.

    Refused calls get ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit
    headers; admitted ones carry the rate-limit headers too. ``key(request)`` says who is
    limited (the client address by default); the key is client input, so it is never
    refused: a key the limiter would not accept is replaced by its SHA-256 (`normalize_key`).
    ``None`` or an empty value means "unknown caller": the client address is limited instead.
    Only `EXEMPT` exempts the request.

    A sync view needs a sync `RateLimiter`. An async view takes an `AsyncRateLimiter` (its
    asyncio client belongs to the server's event loop) or a sync one, which then runs in a
    worker thread; its key function may be async.

    Args:
        limiter: any `RateLimiter` or `AsyncRateLimiter` (including the multi-limits).
        key: who is limited: `remote_addr` by default (see `forwarded_for` behind a proxy);
            returns str, bytes, ``None`` (use the client address) or `EXEMPT`.
        cost: units each call consumes.
        fail_open: when the server cannot be reached or fails, run the view anyway (True,
            the default) or answer ``503`` (False); either way the failure is logged.
        headers: ``"legacy"`` (``RateLimit-Limit/-Remaining/-Reset``, the default),
            ``"draft"`` (the IETF draft's ``RateLimit`` and ``RateLimit-Policy``) or ``"both"``.
        on_refused: shapes the 429 / 503 body: `plain_text` (default), `json_error`,
            `problem_json` (RFC 9457) or your own ``(Refusal) -> RefusalResponse``.

    Raises:
        TypeError: ``limiter`` is not a rate limiter; or (when called) a sync view decorated
            with an `AsyncRateLimiter`.
        ConfigurationError: ``cost`` is not an int from 1 to the limiter's limit, or an
            unknown header style.
    """
    guard = _guard(limiter, cost=cost, fail_open=fail_open, headers=headers, on_refused=on_refused)

    def decorate(view: V) -> V:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                verdict = await _async_verdict(guard, key, request)
                if verdict.refusal is not None:
                    return _refused(verdict.refusal)
                return _admitted(await view(request, *args, **kwargs), verdict.headers)

            return async_wrapper  # type: ignore[return-value]
        sync_guard = guard

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # Checked here, not when decorating: method_decorator tries every decorator on a
            # sync dummy function first, whatever the method it decorates.
            if not isinstance(sync_guard, Guard):
                raise TypeError(
                    f"{getattr(view, '__name__', 'this view')} is a sync view: it needs a sync "
                    "RateLimiter (an asyncio client belongs to an event loop, and a sync view "
                    "runs in none)"
                )
            verdict = _sync_verdict(sync_guard, key, request)
            if verdict.refusal is not None:
                return _refused(verdict.refusal)
            return _admitted(view(request, *args, **kwargs), verdict.headers)

        return wrapper  # type: ignore[return-value]

    return decorate


_OPTIONS = frozenset({"LIMITER", "KEY", "COST", "FAIL_OPEN", "HEADERS", "ON_REFUSED", "PATHS"})


def _imported(value: object, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{what}: cannot import {value!r}: {exc}") from exc


class RateLimitMiddleware:
    """Limit every request (or those under ``PATHS``) with the limiter in the settings.

    ``MIDDLEWARE = ["redis_patterns.integrations.django.ratelimit.RateLimitMiddleware", ...]``
    with::

        REDIS_PATTERNS_RATELIMIT = {
            "LIMITER": "myproject.limits.api",  # a limiter, or its dotted path
            "KEY": "myproject.limits.api_key",  # optional: a key function, or its dotted path
            "PATHS": ["/api/"],                 # optional: path prefixes (default: all)
            "COST": 1, "FAIL_OPEN": True, "HEADERS": "legacy",
            "ON_REFUSED": "redis_patterns.integrations.ratelimit_http.problem_json",
        }

    The options are `rate_limit`'s. Both sync and async: under WSGI it needs a sync
    `RateLimiter`; under ASGI either kind (a sync one runs in a worker thread). Place it before
    ``SessionMiddleware`` and the authentication middleware so that a refused request costs
    nothing else; a key function that reads ``request.user`` needs it after them. ``PATHS`` are
    matched against ``request.path_info`` (what the URLconf sees), on ``/`` boundaries. For a
    second, differently configured limit, subclass it with another ``setting`` name.

    Raises:
        ImproperlyConfigured: the setting is missing, has an unknown option or a bad value, or
            an `AsyncRateLimiter` is configured for a sync (WSGI) middleware chain.
    """

    sync_capable = True
    async_capable = True
    setting = "REDIS_PATTERNS_RATELIMIT"

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        config = getattr(settings, self.setting, None)
        if not isinstance(config, Mapping):
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs settings.{self.setting}, a dict with a LIMITER"
            )
        unknown = set(config) - _OPTIONS
        if unknown or "LIMITER" not in config:
            raise ImproperlyConfigured(
                f"settings.{self.setting}: needs LIMITER; unknown options {sorted(unknown)} "
                f"(known: {sorted(_OPTIONS)})"
            )
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        try:
            self.guard = _guard(
                _imported(config["LIMITER"], f"{self.setting}['LIMITER']"),
                cost=config.get("COST", 1),
                fail_open=config.get("FAIL_OPEN", True),
                headers=config.get("HEADERS", "legacy"),
                on_refused=_imported(config.get("ON_REFUSED", plain_text), "ON_REFUSED"),
            )
            self.paths = Paths(config.get("PATHS"))
        except (TypeError, ConfigurationError) as exc:
            raise ImproperlyConfigured(f"settings.{self.setting}: {exc}") from exc
        self.key: KeyFunc = _imported(config.get("KEY", remote_addr), "KEY")
        if not callable(self.key):
            raise ImproperlyConfigured(f"settings.{self.setting}['KEY'] must be callable")
        if isinstance(self.guard, AsyncGuard) and not self.is_async:
            raise ImproperlyConfigured(
                f"settings.{self.setting}: an AsyncRateLimiter needs an async (ASGI) "
                "middleware chain; under WSGI configure a sync RateLimiter"
            )

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if request.path_info not in self.paths:
            return self.get_response(request)
        assert isinstance(self.guard, Guard)  # checked in __init__
        verdict = _sync_verdict(self.guard, self.key, request)
        if verdict.refusal is not None:
            return _refused(verdict.refusal)
        return _admitted(self.get_response(request), verdict.headers)

    async def __acall__(self, request: HttpRequest) -> Any:
        if request.path_info not in self.paths:
            return await self.get_response(request)
        verdict = await _async_verdict(self.guard, self.key, request)
        if verdict.refusal is not None:
            return _refused(verdict.refusal)
        return _admitted(await self.get_response(request), verdict.headers)
