"""A one-file Django site on the redis-patterns session engine: log in, count visits, log out
everywhere with ``destroy_user``.

Run it as a script to exercise it with Django's test client (an embedded server unless
``REDIS_URL`` is set).
"""

from __future__ import annotations

import os

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="example only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["testserver"],
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="redis_patterns.integrations.django.sessions",
    REDIS_PATTERNS_SESSIONS={
        "url": os.environ.get("REDIS_URL"),  # None: an embedded server (development only)
        "idle_ttl": 1800,
        "absolute_ttl": 8 * 3600,
    },
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    USE_TZ=True,
)
django.setup()

from django.contrib.auth import authenticate, login  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from redis_patterns.integrations.django.sessions import destroy_user  # noqa: E402


def login_view(request: HttpRequest) -> JsonResponse:
    user = authenticate(request, username=request.GET["user"], password="pw")
    if user is None:
        return JsonResponse({"error": "bad credentials"}, status=403)
    login(request, user)  # a new session id, bound to the user (indexed for destroy_user)
    return JsonResponse({"user": user.get_username()})


def visit(request: HttpRequest) -> JsonResponse:
    visits = int(request.session.get("visits", 0)) + 1
    request.session["visits"] = visits  # only this key is written back
    return JsonResponse({"user": request.user.get_username() or None, "visits": visits})


def logout_everywhere(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"deleted": destroy_user(request.user)})


urlpatterns = [
    path("login", login_view),
    path("visit", visit),
    path("logout-everywhere", logout_everywhere),
]


def main() -> None:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    User.objects.create_user("alice", password="pw")
    phone, laptop = Client(), Client()
    for device in (phone, laptop):
        device.get("/login", {"user": "alice"})
        device.get("/visit")
    assert phone.get("/visit").json() == {"user": "alice", "visits": 2}
    assert phone.get("/logout-everywhere").json() == {"deleted": 2}
    assert laptop.get("/visit").json() == {"user": None, "visits": 1}  # logged out there too
    print("django sessions: logged in on 2 devices, logged out everywhere")


if __name__ == "__main__":
    main()
