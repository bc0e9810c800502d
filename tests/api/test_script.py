"""Script on real servers: EVALSHA, NOSCRIPT recovery, Lua errors, cross-slot refusal, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from redis_patterns import ConfigurationError, CrossSlotError, Script, ScriptError
from redis_patterns.testing.pytest_plugin import Backend

INCR_BY = """
-- KEYS[1] counter
-- ARGV[1] amount
-- returns the new value
local amount = tonumber(ARGV[1])
return redis.call('INCRBY', KEYS[1], amount)
"""


def test_call_runs_evalsha_once_cached(backend: Backend, prefix: str) -> None:
    client = backend.client()
    script = Script(INCR_BY)
    key = f"{prefix}:n"
    assert script(client, keys=[key], args=[2]) == 2
    with backend.counter() as seen:
        assert script(client, keys=[key], args=[3]) == 5
    assert seen.names == ["EVALSHA"]


def test_recovers_from_script_flush_mid_run(backend: Backend, prefix: str) -> None:
    client = backend.client()
    script = Script(INCR_BY)
    key = f"{prefix}:n"
    total = 0
    for i in range(1, 7):
        if i in (3, 5):
            backend.flush_scripts()
            with backend.counter() as seen:
                total = script(client, keys=[key], args=[i])
            # The flushed script is loaded by EVAL exactly once, and ran exactly once.
            assert seen.names == ["EVALSHA", "EVAL"]
        else:
            total = script(client, keys=[key], args=[i])
    assert total == sum(range(1, 7))
    assert int(client.get(key) or 0) == 21


async def test_async_recovers_from_script_flush_mid_run(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    script = Script(INCR_BY)
    key = f"{prefix}:n"
    assert await script(client, keys=[key], args=[1]) == 1
    backend.flush_scripts()
    with backend.counter() as seen:
        assert await script(client, keys=[key], args=[1]) == 2
    assert seen.names == ["EVALSHA", "EVAL"]
    with backend.counter() as seen:
        assert await script(client, keys=[key], args=[1]) == 3
    assert seen.names == ["EVALSHA"]
    await client.aclose()


def test_error_reply_surfaces_as_script_error_with_the_lua_message(
    client: Any, prefix: str
) -> None:
    refuse = Script("return redis.error_reply('insufficient funds: balance 3, amount 5')")
    with pytest.raises(ScriptError, match="insufficient funds: balance 3, amount 5") as info:
        refuse(client, keys=[f"{prefix}:w"])
    assert info.value.__cause__ is not None  # redis-py's error is kept


def test_runtime_error_surfaces_as_script_error(client: Any, prefix: str) -> None:
    key = f"{prefix}:s"
    client.set(key, "not a number")
    with pytest.raises(ScriptError, match="not an integer"):
        Script(INCR_BY)(client, keys=[key], args=[1])


def test_lua_syntax_error_is_a_script_error(client: Any) -> None:
    with pytest.raises(ScriptError, match=r"(?i)error"):
        Script("return (")(client)


async def test_async_script_error(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    with pytest.raises(ScriptError, match="nope"):
        await Script("return redis.error_reply('nope')")(client, keys=[f"{prefix}:x"])
    await client.aclose()


@pytest.mark.backends("cluster")
def test_cross_slot_keys_are_refused_before_anything_runs(backend: Backend, prefix: str) -> None:
    client = backend.client()
    client.ping()
    keys = [f"{prefix}:from", f"{prefix}:to", f"{prefix}:audit"]
    with backend.counter() as seen, pytest.raises(CrossSlotError) as info:
        Script(INCR_BY)(client, keys=keys, args=[1])
    assert seen.count == 0
    message = str(info.value)
    assert all(k in message for k in keys)  # it names the keys
    assert "hash tag" in message  # and says how to fix it
    for key in keys:
        assert client.exists(key) == 0


@pytest.mark.backends("cluster")
async def test_async_cross_slot_keys_are_refused(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    await client.ping()
    with backend.counter() as seen, pytest.raises(CrossSlotError, match="hash tag"):
        await Script(INCR_BY)(client, keys=[f"{prefix}:a", f"{prefix}:b", f"{prefix}:c"])
    assert seen.count == 0
    await client.aclose()


@pytest.mark.backends("cluster")
def test_hash_tagged_keys_run_on_their_node(backend: Backend, prefix: str) -> None:
    client = backend.client()
    move = Script(
        "redis.call('INCRBY', KEYS[1], -ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])"
    )
    assert move(client, keys=[f"{{{prefix}}}:a", f"{{{prefix}}}:b"], args=[5]) == 5
    assert client.get(f"{{{prefix}}}:a") == b"-5"


def test_from_file(tmp_path: Path, client: Any, prefix: str) -> None:
    path = tmp_path / "incr_by.lua"
    path.write_text(INCR_BY, encoding="utf-8")
    script = Script.from_file(path)
    assert script.name == "incr_by"
    assert script.sha == Script(INCR_BY).sha
    assert script(client, keys=[f"{prefix}:n"], args=[4]) == 4
    assert Script.from_file(str(path)).source == INCR_BY


def test_from_file_missing_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Script.from_file(tmp_path / "nope.lua")


@pytest.mark.parametrize("source", ["", "   \n", b""])
def test_empty_source_is_refused(source: Any) -> None:
    with pytest.raises(ConfigurationError):
        Script(source)


@pytest.mark.parametrize("source", [None, 42, ["return 1"]])
def test_non_text_source_is_a_type_error(source: Any) -> None:
    with pytest.raises(TypeError):
        Script(source)


def test_sha_is_computed_locally() -> None:
    script = Script(b"return 1")
    assert script.sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    assert "e0e1f9fa" in repr(script)
