"""A Django app for the multi-process rate-limit test; gunicorn imports it (settings in-module).

Environment: ``REDIS_URL``, ``RL_NAME`` (a prefix unique to the test run) and ``RL_LIMIT``.
``/api/items`` is limited by the settings-configured middleware, ``/login`` by the decorator,
both by client address; each of their responses' status is counted per worker in Redis, and
``/ready`` answers the worker's process id.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

import redis_patterns as rp
from redis_patterns.integrations.django.ratelimit import rate_limit

NAME = os.environ["RL_NAME"]
client = rp.connect(os.environ["REDIS_URL"])
API = rp.SlidingLog(client, int(os.environ["RL_LIMIT"]), 3600.0, name=f"{NAME}-api")
LOGIN = rp.SlidingLog(client, 10, 3600.0, name=f"{NAME}-login")
STATUSES = f"{NAME}:statuses"  # a hash: "<pid>:<status>" -> count


class CountStatuses:
    """Outermost: sees every response, the limiters' 429s included."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        response = self.get_response(request)
        if request.path != "/ready":
            client.hincrby(STATUSES, f"{os.getpid()}:{response.status_code}", 1)
        return response


settings.configure(
    DEBUG=False,
    SECRET_KEY="redis-patterns multi-process test",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        f"{__name__}.CountStatuses",
        "redis_patterns.integrations.django.ratelimit.RateLimitMiddleware",
    ],
    REDIS_PATTERNS_RATELIMIT={"LIMITER": API, "PATHS": ["/api"], "HEADERS": "both"},
)
django.setup()


def items(request: HttpRequest) -> HttpResponse:
    return HttpResponse("items")


@rate_limit(LOGIN)
def login(request: HttpRequest) -> HttpResponse:
    return HttpResponse("welcome")


def ready(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(os.getpid()))


urlpatterns = [path("api/items", items), path("login", login), path("ready", ready)]
application = get_wsgi_application()
