"""Cookie settings browsers would silently drop are refused when the integration is built."""

from __future__ import annotations

from typing import Any

import pytest

from redis_patterns import ConfigurationError, SessionStore
from redis_patterns.integrations.sessions_asgi import SessionMiddleware
from redis_patterns.integrations.sessions_flask import RedisSessionInterface
from redis_patterns.testing.pytest_plugin import Backend

BAD = [
    ({"cookie_name": "__Host-s", "domain": "example.com"}, "__Host-"),
    ({"cookie_name": "__Host-s", "path": "/api"}, "__Host-"),
    ({"cookie_name": "__Host-s", "secure": False}, "__Host-"),
    ({"cookie_name": "__Host-s", "host_prefix": False, "domain": "example.com"}, "__Host-"),
    ({"cookie_name": "__Secure-s", "secure": False}, "__Secure-"),
    ({"path": ""}, "path"),
    ({"path": "api"}, "path"),
]


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called
    raise AssertionError


@pytest.mark.backends("valkey")
@pytest.mark.parametrize(("options", "message"), BAD)
def test_asgi_refuses_cookies_browsers_drop(
    backend: Backend, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SessionMiddleware(_app, lambda: None, **options)  # type: ignore[arg-type,return-value]


@pytest.mark.backends("valkey")
@pytest.mark.parametrize(("options", "message"), BAD)
def test_flask_refuses_cookies_browsers_drop(
    backend: Backend, options: dict[str, Any], message: str
) -> None:
    store = SessionStore(backend.client())
    with pytest.raises(ConfigurationError, match=message):
        RedisSessionInterface(store, **options)


@pytest.mark.backends("valkey")
def test_secure_prefix_with_secure_cookie_is_fine(backend: Backend) -> None:
    store = SessionStore(backend.client())
    assert RedisSessionInterface(store, cookie_name="__Secure-s").cookie.name == "__Secure-s"
    explicit = RedisSessionInterface(store, cookie_name="__Host-s")
    assert explicit.cookie.name == "__Host-s"
