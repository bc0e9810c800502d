"""The Django session engine beyond Django's own suite: per-field writes, the user index and
``destroy_user``, ``set_expiry`` on the server, native async, and a server that is down."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _django_sdist import url_of

from redis_patterns import BackendUnavailableError
from redis_patterns._core.sessions import SessionCore
from redis_patterns.testing.pytest_plugin import Backend

pytest.importorskip("django")

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

if not settings.configured:
    settings.configure(SECRET_KEY="redis-patterns tests")

from redis_patterns.integrations.django import sessions as engine
from redis_patterns.integrations.django.sessions import SessionStore

ENGINE = "redis_patterns.integrations.django.sessions"


@pytest.fixture
def configured(backend: Backend, prefix: str) -> Iterator[dict[str, Any]]:
    options: dict[str, Any] = {"url": url_of(backend), "namespace": prefix}
    with override_settings(SESSION_ENGINE=ENGINE, REDIS_PATTERNS_SESSIONS=options):
        yield options
    engine._forget_stores()


def test_only_changed_fields_are_written(backend: Backend, configured: Any) -> None:
    first = SessionStore()
    first.update({"a": 1, "b": 2, "cart": []})
    first.save()
    key = first.session_key
    left, right = SessionStore(key), SessionStore(key)
    left["a"], right["b"] = 10, 20  # both loaded before either saves
    right["cart"].append("sku")  # a nested change is seen too
    left.save()
    with backend.counter() as seen:
        right.save()
    assert seen.names == ["EVALSHA"]  # one script: the changed fields only
    assert dict(SessionStore(key).items()) == {"a": 10, "b": 20, "cart": ["sku"]}


def test_keys_the_store_reserves_round_trip(configured: Any) -> None:
    session = SessionStore()
    odd = {":meta": 1, "": 2, "\\x": 3, ":": 4, "plain": 5}
    session.update(odd)
    session.save()
    assert dict(SessionStore(session.session_key).items()) == odd


def test_cycle_key_rotates_and_the_old_id_dies(backend: Backend, configured: Any) -> None:
    session = SessionStore()
    session["a"] = 1
    session.save()
    old = session.session_key
    session.modified = False
    session.cycle_key()
    assert session.session_key != old
    assert session.modified is True  # the middleware sends the new cookie
    assert session.exists(old) is False
    assert dict(SessionStore(session.session_key).items()) == {"a": 1}
    with backend.client() as client:
        assert client.exists(engine.session_store()._core._key_of(old)) == 0


def _login(session: SessionStore, user_id: str) -> None:
    """What django.contrib.auth.login does to the session, signal included."""
    request = HttpRequest()
    request.session = session
    session.cycle_key()
    session[SESSION_KEY] = user_id
    user_logged_in.send(sender=object, request=request, user=None)


def test_login_indexes_the_session_and_destroy_user_logs_out_everywhere(
    configured: Any,
) -> None:
    phone, laptop, other = SessionStore(), SessionStore(), SessionStore()
    for session, user in ((phone, "42"), (laptop, "42"), (other, "7")):
        session["cart"] = [user]
        session.save()
        _login(session, user)
        session.save()
    store = engine.session_store()
    assert sorted(store.sessions_of("42")) == sorted([phone.session_key, laptop.session_key])
    assert phone.session_key[:3] == laptop.session_key[:3]  # the user's bucket
    assert engine.destroy_user(42) == 2
    assert dict(SessionStore(phone.session_key).items()) == {}
    assert dict(SessionStore(laptop.session_key).items()) == {}
    assert dict(SessionStore(other.session_key).items()) == {"cart": ["7"], SESSION_KEY: "7"}
    # a save from a request still holding the session never brings it back
    phone["late"] = 1
    with pytest.raises(UpdateError):
        phone.save()


def test_logout_deletes_the_session_and_its_index_entry(configured: Any) -> None:
    session = SessionStore()
    session["a"] = 1
    _login(session, "42")
    session.save()
    request = HttpRequest()
    request.session = session
    user_logged_out.send(sender=object, request=request, user=None)
    old = session.session_key
    session.flush()
    assert session.session_key is None
    assert session.exists(old) is False
    assert engine.session_store().sessions_of("42") == []


def test_a_fresh_session_saved_at_login_is_created_in_the_users_bucket(configured: Any) -> None:
    session = SessionStore()
    session.flush()  # login() flushes when another user was logged in
    session[SESSION_KEY] = "42"
    request = HttpRequest()
    request.session = session
    user_logged_in.send(sender=object, request=request, user=None)
    session.save()
    assert engine.session_store().sessions_of("42") == [session.session_key]


def _pttl(backend: Backend, session: SessionStore) -> int:
    key = SessionCore(**session._config.store_args())._key_of(session.session_key)
    with backend.client() as client:
        return int(client.pttl(key))


def test_set_expiry_is_enforced_by_the_server(backend: Backend, configured: Any) -> None:
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(30)  # 30 s of inactivity: the session's own idle lifetime
    session.save()
    assert 20_000 < _pttl(backend, session) <= 30_000
    reread = SessionStore(session.session_key)
    assert reread["a"] == 1  # a read slides it by its own idle lifetime, not the store's
    assert 20_000 < _pttl(backend, session) <= 30_000
    session.set_expiry(timedelta(seconds=20))  # a deadline
    session.save()
    assert 10_000 < _pttl(backend, session) <= 20_000
    assert engine.session_store().get(session.session_key).absolute_expires_at is not None  # type: ignore[union-attr]
    session.set_expiry(None)  # back to the store's: SESSION_COOKIE_AGE
    session.save()
    assert _pttl(backend, session) > 1_000_000_000
    session.set_expiry(0)  # the cookie ends with the browser; the server keeps the store's
    session.save()
    assert _pttl(backend, session) > 1_000_000_000
    session.set_expiry(-10)
    session.save()  # an expiry in the past ends the session now
    assert session.exists(session.session_key) is False


def test_absolute_ttl_caps_set_expiry_and_idle_ttl_sets_the_cookie_age(
    backend: Backend, prefix: str, configured: dict[str, Any]
) -> None:
    options = {**configured, "idle_ttl": 60, "absolute_ttl": 120}
    with override_settings(REDIS_PATTERNS_SESSIONS=options):
        session = SessionStore()
        assert session.get_expiry_age() == 60  # the cookie's Max-Age follows idle_ttl
        session.set_expiry(timedelta(days=30))
        session.save()
        assert 100_000 < _pttl(backend, session) <= 120_000


def _middleware_request(
    view: Any, cookie: str | None = None, **extra: Any
) -> tuple[HttpRequest, HttpResponse]:
    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES[settings.SESSION_COOKIE_NAME] = cookie
    response = SessionMiddleware(view)(request)
    return request, response


def test_the_middleware_sets_the_cookie_to_the_bound_id(configured: Any) -> None:
    def view(request: Any) -> HttpResponse:
        request.session["a"] = 1
        return HttpResponse("ok")

    request, response = _middleware_request(view)
    sid = response.cookies[settings.SESSION_COOKIE_NAME].value
    assert sid == request.session.session_key
    assert SessionStore(sid)["a"] == 1


async def test_async_methods_use_the_async_store(backend: Backend, configured: Any) -> None:
    session = SessionStore()
    await session.aset("a", 1)
    await session.asave()
    again = SessionStore(session.session_key)
    assert await again.aget("a") == 1
    old = again.session_key
    await again.acycle_key()
    assert not await again.aexists(old)
    assert await again.aexists(again.session_key)
    await again.aset_expiry(30)
    await again.asave()
    assert 20_000 < _pttl(backend, again) <= 30_000
    await again.aflush()
    assert again.session_key is None
    assert engine._sync == {}  # no sync store was made: every call ran on the event loop
    await engine.async_session_store().client.aclose()


@pytest.mark.parametrize(
    "options",
    [
        {"nope": 1},
        {"idle_ttl": -1},
        {"absolute_ttl": 10, "idle_ttl": 60},
        {"on_backend_error": "ignore"},
        {"namespace": "a{b"},
        {"url": "redis+cluster://nohost"},
    ],
)
def test_bad_settings_are_improperly_configured(options: dict[str, Any]) -> None:
    with (
        override_settings(REDIS_PATTERNS_SESSIONS=options),
        pytest.raises(ImproperlyConfigured, match="REDIS_PATTERNS_SESSIONS"),
    ):
        SessionStore().save()
    engine._forget_stores()


# -- the server down ---------------------------------------------------------------------------


@pytest.fixture
def stopped(server_factory: Any, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A session made on a private server, and settings naming that server, now stopped."""
    server = server_factory()
    options: dict[str, Any] = {"url": f"redis://127.0.0.1:{server.port}/0", "namespace": prefix}
    with override_settings(SESSION_ENGINE=ENGINE, REDIS_PATTERNS_SESSIONS=options):
        session = SessionStore()
        session[SESSION_KEY] = "42"
        session.save()
        engine._forget_stores()
        server.stop()
        yield session.session_key, options
    engine._forget_stores()


def _writing_view(request: Any) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(f"user={request.session.get(SESSION_KEY)}")


def test_raise_fails_the_request_clearly(stopped: tuple[str, dict[str, Any]]) -> None:
    sid, _ = stopped
    with pytest.raises(BackendUnavailableError):
        _middleware_request(_writing_view, sid)


def test_anonymous_serves_an_empty_session_writes_nothing_and_logs_once(
    stopped: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    sid, options = stopped
    caplog.set_level(logging.WARNING, logger="redis_patterns.sessions")
    with override_settings(REDIS_PATTERNS_SESSIONS={**options, "on_backend_error": "anonymous"}):
        for _ in range(50):
            _, response = _middleware_request(_writing_view, sid)
            assert response.status_code == 200
            assert response.content == b"user=None"  # anonymous
            assert settings.SESSION_COOKIE_NAME not in response.cookies  # cookie left alone

        def logout(request: Any) -> HttpResponse:
            request.session.flush()
            return HttpResponse("bye")

        _, response = _middleware_request(logout, sid)
        assert response.status_code == 200
        # the session could not be deleted: the cookie stays (the logout visibly failed)
        assert settings.SESSION_COOKIE_NAME not in response.cookies
    lines = [r for r in caplog.records if r.name == "redis_patterns.sessions"]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # coalesced: one line a minute
    assert "unreachable" in lines[0].getMessage()
