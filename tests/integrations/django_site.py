"""A one-file Django site on the redis-patterns session engine, served by gunicorn in the tests.

``python django_site.py setup`` creates its database (``$RP_DJANGO_DB``) and the users alice and
bob (password ``pw``); ``gunicorn django_site:application`` serves it. The server comes from
``$RP_DJANGO_URL``, the key namespace from ``$RP_DJANGO_NAMESPACE``. Views:

- ``POST /login?user=alice``: ``authenticate`` + ``login`` (the session is bound to the user);
- ``GET /me``: 200 with the user's name when logged in, 403 otherwise; header ``X-Worker``;
- ``POST /visit``: writes a field into the session;
- ``POST /logout-everywhere``: ``destroy_user(request.user)``;
- ``POST /logout``: ``logout``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="redis-patterns django site",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.environ.get("RP_DJANGO_DB", ":memory:"),
            }
        },
        SESSION_ENGINE="redis_patterns.integrations.django.sessions",
        REDIS_PATTERNS_SESSIONS={
            "url": os.environ.get("RP_DJANGO_URL"),
            "namespace": os.environ.get("RP_DJANGO_NAMESPACE", "django-site"),
        },
        # the fast hasher: logins are not what this site measures
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from django.contrib.auth import authenticate, login, logout
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.urls import path

from redis_patterns.integrations.django.sessions import destroy_user


def _reply(request: HttpRequest, text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    response["X-Worker"] = str(os.getpid())
    return response


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username=request.GET["user"], password="pw")
    if user is None:
        return _reply(request, "bad credentials", 403)
    login(request, user)
    return _reply(request, user.get_username())


def me(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return _reply(request, "anonymous", 403)
    return _reply(request, request.user.get_username())


def visit(request: HttpRequest) -> HttpResponse:
    request.session[f"visit-{os.getpid()}"] = request.session.get(f"visit-{os.getpid()}", 0) + 1
    return _reply(request, "ok")


def logout_everywhere(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return _reply(request, "anonymous", 403)
    return _reply(request, str(destroy_user(request.user)))


def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return _reply(request, "bye")


def _csrf_exempt(view: Any) -> Any:
    view.csrf_exempt = True
    return view


urlpatterns = [
    path("login", _csrf_exempt(login_view)),
    path("me", me),
    path("visit", _csrf_exempt(visit)),
    path("logout-everywhere", _csrf_exempt(logout_everywhere)),
    path("logout", _csrf_exempt(logout_view)),
]

application = WSGIHandler()


def setup() -> None:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    for name in ("alice", "bob"):
        User.objects.create_user(name, password="pw")


if __name__ == "__main__" and sys.argv[1:] == ["setup"]:
    setup()
