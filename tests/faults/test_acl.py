"""Scenario 41: least privilege. An ACL user limited to ``app:*`` works; NOPERM is typed."""

from __future__ import annotations

from typing import Any

import pytest

import redis_patterns
from redis_patterns import (
    AsyncBoundedCounter,
    BackendError,
    BoundedCounter,
    Cache,
    EmbeddedServer,
    PermissionDeniedError,
)
from redis_patterns._plan import Command
from redis_patterns._redis import client_features
from redis_patterns._runner import SyncRunner

pytestmark = pytest.mark.fault

# What the library's scripts need: read/write data commands and EVALSHA/EVAL, on app keys only.
RULES = [
    "on",
    ">app-secret",
    "resetkeys",
    "~app:*",
    "resetchannels",
    "&app:*",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "-@dangerous",
]


@pytest.fixture(params=[pytest.param(None, id="valkey"), pytest.param("redis7", id="redis7")])
def app_url(request: pytest.FixtureRequest, server_factory: Any) -> str:
    server: EmbeddedServer = server_factory(request.param)
    with server.client() as admin:
        admin.execute_command("ACL SETUSER", "app", *RULES)
        admin.script_flush()  # the first EVALSHA must take the NOSCRIPT -> EVAL path as "app"
    return f"redis://app:app-secret@127.0.0.1:{server.port}"


def test_acl_user_runs_bounded_counter_on_its_keys(app_url: str) -> None:
    with redis_patterns.connect(app_url) as client:
        counter = BoundedCounter(client, "app:counter", 2)
        assert [counter.incr(), counter.incr(), counter.incr()] == [1, 2, None]
        assert counter.value() == 2
        counter.reset()
        assert counter.value() == 0


def test_keys_outside_the_acl_pattern_are_refused_typed(app_url: str) -> None:
    with redis_patterns.connect(app_url) as client:
        outside = BoundedCounter(client, "other:counter", 2)
        with pytest.raises(PermissionDeniedError, match=r"(?i)no permissions") as caught:
            outside.incr()  # EVALSHA with a key the user may not touch: refused, nothing ran
        assert isinstance(caught.value, BackendError)
        assert isinstance(caught.value, PermissionError)
        with pytest.raises(PermissionDeniedError):
            outside.value()  # a plain GET as well
        with pytest.raises(PermissionDeniedError, match="flushall"):
            SyncRunner(client).perform(Command(("FLUSHALL",)))  # a refused command, typed too


async def test_async_acl_user(app_url: str) -> None:
    client = redis_patterns.connect(app_url, asyncio=True)
    try:
        assert await AsyncBoundedCounter(client, "app:c", 1).incr() == 1
        with pytest.raises(PermissionDeniedError):
            await AsyncBoundedCounter(client, "nope:c", 1).incr()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "rights",
    [
        pytest.param(("+@read", "+@write", "+@scripting", "+@fast", "+@keyspace"), id="no-exec"),
        pytest.param(("+@all", "-@transaction"), id="no-multi"),
    ],
)
def test_a_user_without_transactions_stores_big_cache_values_by_the_script(
    valkey_server: EmbeddedServer, prefix: str, rights: tuple[str, ...]
) -> None:
    """A big value's store is a MULTI/EXEC block. A user who may run MULTI but not EXEC is
    refused the block whole (nothing ran); one who may not run MULTI has its items run one
    by one (what they did stands, and is answered). Either way the client learns it once and
    every later big store goes by the one script: no MULTI is sent again."""
    user = f"cache-{prefix.replace(':', '-')}"
    rules = ["on", ">cache-secret", "resetkeys", "~*", "allchannels", "-@all", *rights]
    with valkey_server.client() as admin:
        admin.execute_command("ACL SETUSER", user, *rules, "-@dangerous")
    url = f"redis://{user}:cache-secret@127.0.0.1:{valkey_server.port}"
    try:
        with redis_patterns.connect(url) as client, valkey_server.client() as admin:
            cache = Cache(client, user)
            big = "x" * (cache._core.big_value_bytes + 1)
            assert cache.add("one", big) is True
            assert client_features(client).transactions is False
            admin.config_resetstat()
            assert cache.add("one", "other") is False  # the script's checks still apply
            cache.set("two", big + "y")
            assert "cmdstat_multi" not in admin.info("commandstats")
            assert (cache.get("one"), cache.get("two")) == (big, big + "y")
    finally:
        with valkey_server.client() as admin:
            admin.execute_command("ACL", "DELUSER", user)
