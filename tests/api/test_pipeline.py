"""`Pipeline` effects on a standalone server, sent without redis-py's ``Pipeline`` object: the
same replies as ``pipe.execute(raise_on_error=False)`` (RESP2, RESP3, ``decode_responses``, sync,
asyncio with and without auto-pipelining), an error item in its place with the rest still read,
exactly the commands asked for in one round trip; never re-sent, even by a client whose Retry
would (the library's rule for anything that may have run)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions as rex

from redis_patterns import (
    BackendError,
    BackendUnavailableError,
    EmbeddedServer,
    PermissionDeniedError,
    RedisPatternsWarning,
    ScriptError,
    autopipeline,
    connect,
)
from redis_patterns._plan import Command, Pipeline
from redis_patterns._runner import AsyncRunner, SyncRunner
from redis_patterns._script import LuaScript
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.counter import CommandCounter

ECHO = LuaScript("return {ARGV[1], tonumber(ARGV[2]) + 1}")
UNKNOWN_SHA = "0" * 40
OPTIONS = [
    pytest.param({}, id="resp2"),
    pytest.param({"protocol": 3}, id="resp3"),
    pytest.param({"decode_responses": True}, id="decoded"),
]


def _commands(p: str) -> list[tuple[Any, ...]]:
    """One of each kind of reply (and of callback), with two error replies in the middle."""
    return [
        ("SET", f"{p}:s", "v"),
        ("MGET", f"{p}:s", f"{p}:missing"),
        ("TIME",),
        ("LPUSH", f"{p}:l", "a"),
        ("GET", f"{p}:l"),  # WRONGTYPE
        ("HSET", f"{p}:h", "f", "1"),
        ("HGETALL", f"{p}:h"),
        ("ZADD", f"{p}:z", "1.5", "m"),
        ("ZRANGE", f"{p}:z", 0, -1, "WITHSCORES"),
        ("INCRBYFLOAT", f"{p}:f", "1.5"),
        ("EVALSHA", ECHO.sha, 0, "x", 41),
        ("EVALSHA", UNKNOWN_SHA, 0),  # NOSCRIPT: a plain command's, not re-sent as EVAL
        ("SET", f"{p}:s", "w", "GET"),
        ("PING",),
        ("EXISTS", f"{p}:s", f"{p}:missing"),
    ]


def _comparable(reply: Any) -> Any:
    """A reply with what changes between two runs left out: the clock's digits, and a library
    error as the redis-py error it was made from."""
    if isinstance(reply, BackendError):
        assert isinstance(reply.__cause__, rex.ResponseError)
        reply = reply.__cause__
    if isinstance(reply, BaseException):
        return (type(reply), str(reply))
    return reply


def _expected(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    return pipe.execute(raise_on_error=False)


def _check(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    clock = [ours.pop(2), theirs.pop(2)]  # TIME: same shape, other digits
    assert [type(c) for c in clock[0]] == [type(c) for c in clock[1]]
    assert len(clock[0]) == len(clock[1]) == 2
    assert [_comparable(r) for r in ours] == [_comparable(r) for r in theirs]
    errors = [r for r in ours if isinstance(r, BaseException)]
    assert [type(e) for e in errors] == [BackendError, ScriptError]
    assert "WRONGTYPE" in str(errors[0])
    assert isinstance(errors[1].__cause__, rex.NoScriptError)


@pytest.mark.parametrize("options", OPTIONS)
def test_sync_replies_equal_redis_pys_pipeline(
    valkey_server: EmbeddedServer, prefix: str, options: dict[str, Any]
) -> None:
    with connect(valkey_server.url, **options) as client:
        client.script_load(ECHO.source)
        runner = SyncRunner(client)
        theirs = _expected(client, _commands(f"{prefix}:a"))
        ours = runner.perform(Pipeline(tuple(Command(c) for c in _commands(f"{prefix}:b"))))
        _check(ours, theirs)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("options", OPTIONS)
async def test_async_replies_equal_redis_pys_pipeline(
    valkey_server: EmbeddedServer, prefix: str, options: dict[str, Any], batching: bool
) -> None:
    with connect(valkey_server.url, **options) as reference:
        reference.script_load(ECHO.source)
        theirs = _expected(reference, _commands(f"{prefix}:a"))
    client = connect(valkey_server.url, asyncio=True, **options)
    try:
        autopipeline(client, batching)
        runner = AsyncRunner(client)
        effect = Pipeline(tuple(Command(c) for c in _commands(f"{prefix}:b")))
        _check(await runner.perform(effect), theirs)
        # With company in its turn (a shared batch): the same replies, for each caller.
        together = await asyncio.gather(
            *(runner.perform(Pipeline((Command(("GET", f"{prefix}:b:s")),))) for _ in range(3)),
            runner.perform(Pipeline((Command(("GET", f"{prefix}:b:l")), Command(("PING",))))),
        )
        assert together[:3] == [[await client.get(f"{prefix}:b:s")]] * 3
        wrongtype, pong = together[3]
        assert isinstance(wrongtype, BackendError)
        assert pong is True
    finally:
        await client.aclose()


def test_a_scripts_reply_and_noscript_retry(valkey_server: EmbeddedServer, prefix: str) -> None:
    """An `Eval` item unknown to the server is sent again as EVAL, in a second round trip."""
    with connect(valkey_server.url) as client:
        client.script_flush()
        script = LuaScript(f"return {{ARGV[1], '{prefix}'}}")
        effect = Pipeline((Command(("PING",)), script.eval((), ("a",)), Command(("PING",))))
        with CommandCounter([("127.0.0.1", valkey_server.port or 0)]) as seen:
            replies = SyncRunner(client).perform(effect)
        assert replies == [True, [b"a", prefix.encode()], True]
        assert seen.names == ["PING", "EVALSHA", "PING", "EVAL"]


def test_error_item_in_the_middle_leaves_the_rest_and_the_connection(
    valkey_server: EmbeddedServer, prefix: str
) -> None:
    with connect(valkey_server.url, max_connections=1) as client:
        runner = SyncRunner(client)
        client.lpush(f"{prefix}:l", "x")
        effect = Pipeline(
            (
                Command(("SET", f"{prefix}:a", "1")),
                Command(("INCR", f"{prefix}:l")),
                Command(("GET", f"{prefix}:a")),
            )
        )
        for _ in range(3):  # the one connection is reused, with nothing left unread on it
            done, failed, value = runner.perform(effect)
            assert done is True
            assert value == b"1"
            assert isinstance(failed, BackendError)
            assert "WRONGTYPE" in str(failed)
            assert isinstance(failed.__cause__, rex.ResponseError)
        assert client.get(f"{prefix}:a") == b"1"


def test_exact_commands_in_one_round_trip(
    valkey_server: EmbeddedServer, fault_proxy: Any, prefix: str
) -> None:
    proxy: FaultProxy = fault_proxy(valkey_server)
    effect = Pipeline(
        (
            Command(("MGET", f"{prefix}:a", f"{prefix}:b")),
            Command(("TIME",)),
            Command(("SET", f"{prefix}:a", "1")),
        )
    )
    with connect(proxy.url, driver_info=None) as client:
        runner = SyncRunner(client)
        runner.perform(effect)  # the connection is open
        before = proxy.stats.forwarded_requests
        with CommandCounter([("127.0.0.1", valkey_server.port or 0)]) as seen:
            assert runner.perform(effect)[0] == [b"1", None]
        assert proxy.stats.forwarded_requests - before == 1
    assert seen.names == ["MGET", "TIME", "SET"]


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_async_exact_commands_in_one_round_trip(
    valkey_server: EmbeddedServer, fault_proxy: Any, prefix: str, batching: bool
) -> None:
    proxy: FaultProxy = fault_proxy(valkey_server)
    effect = Pipeline((Command(("MGET", f"{prefix}:a")), Command(("TIME",))))
    client = connect(proxy.url, asyncio=True, driver_info=None)
    try:
        autopipeline(client, batching)
        runner = AsyncRunner(client)
        await runner.perform(effect)
        before = proxy.stats.forwarded_requests
        with CommandCounter([("127.0.0.1", valkey_server.port or 0)]) as seen:
            assert (await runner.perform(effect))[0] == [None]
        assert proxy.stats.forwarded_requests - before == 1
    finally:
        await client.aclose()
    assert seen.names == ["MGET", "TIME"]


def test_acl_user_through_the_pool(valkey_server: EmbeddedServer, prefix: str) -> None:
    """The pool authenticates its connections as usual; a refused item is typed in place."""
    user = f"{prefix}-user".replace(":", "-")
    with valkey_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", user, "on", ">secret", "resetkeys", f"~{prefix}:*", "+@all"
        )
    try:
        url = f"redis://{user}:secret@127.0.0.1:{valkey_server.port}"
        with connect(url) as client:
            replies = SyncRunner(client).perform(
                Pipeline(
                    (
                        Command(("SET", f"{prefix}:k", "1")),
                        Command(("GET", "elsewhere")),
                        Command(("GET", f"{prefix}:k")),
                    )
                )
            )
        assert replies[0] is True
        assert replies[2] == b"1"
        assert isinstance(replies[1], PermissionDeniedError)
    finally:
        with valkey_server.client() as admin:
            admin.execute_command("ACL", "DELUSER", user)


def test_a_client_that_resends_does_not_resend_a_pipeline(
    valkey_server: EmbeddedServer, fault_proxy: Any, prefix: str
) -> None:
    """redis-py's default Retry would send a pipeline whose reply was lost again (its writes
    applied twice); the library never re-sends what may have run: the outcome is unknown."""
    proxy: FaultProxy = fault_proxy(valkey_server)
    with redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5) as client:
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() > 0
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            runner = SyncRunner(client)
        effect = Pipeline((Command(("INCR", f"{prefix}:n")), Command(("GET", f"{prefix}:n"))))
        assert runner.perform(effect) == [1, b"1"]
        proxy.drop_replies(match="INCR")
        with pytest.raises(BackendUnavailableError):
            runner.perform(effect)
        proxy.pass_through()
        assert proxy.stats.matched_requests == 1  # sent once
        assert runner.perform(effect) == [3, b"3"]  # the lost one ran, once


async def test_a_client_that_resends_does_not_resend_an_auto_pipelined_batch(
    valkey_server: EmbeddedServer, fault_proxy: Any, prefix: str
) -> None:
    """The batch concurrent tasks share goes out as one write, not through redis-py's
    ``Pipeline`` (which follows the client's Retry): a lost reply fails every task's pipeline,
    and each ran once."""
    proxy: FaultProxy = fault_proxy(valkey_server)
    client = redis.asyncio.Redis(host=proxy.host, port=proxy.port, socket_timeout=5)
    try:
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() > 0
        with pytest.warns(RedisPatternsWarning, match="applied twice"):
            runner = AsyncRunner(client)
        effect = Pipeline((Command(("INCR", f"{prefix}:n")), Command(("GET", f"{prefix}:n"))))
        assert await runner.perform(effect) == [1, b"1"]
        proxy.drop_replies(match="INCR")
        before = proxy.stats.forwarded_requests
        results = await asyncio.gather(
            *(runner.perform(effect) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, BackendUnavailableError) for r in results), results
        proxy.pass_through()
        assert proxy.stats.forwarded_requests - before == 1  # one batch, sent once
        assert await runner.perform(effect) == [12, b"12"]  # the lost ones ran, once each
    finally:
        await client.aclose()
