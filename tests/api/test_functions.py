"""FunctionLibrary on real servers: one FCALL, loaded on demand after FUNCTION FLUSH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from redis_patterns import ConfigurationError, CrossSlotError, FunctionLibrary, ScriptError
from redis_patterns.testing.pytest_plugin import Backend

SOURCE = """#!lua name=rp_test_wallet
-- transfer(keys = {from, to}, args = {amount}): the new source balance, or nil if too low
redis.register_function('transfer', function(keys, args)
  local amount = tonumber(args[1])
  local balance = tonumber(redis.call('GET', keys[1]) or '0')
  if balance < amount then
    return false
  end
  redis.call('INCRBY', keys[2], amount)
  return redis.call('DECRBY', keys[1], amount)
end)
redis.register_function('refuse', function(keys, args)
  return redis.error_reply('refused: ' .. args[1])
end)
"""
LIBRARY = FunctionLibrary(SOURCE)


def _flush(backend: Backend) -> None:
    for server in backend.servers:
        with server.client() as node:
            node.function_flush()


def test_one_fcall_once_loaded(backend: Backend, prefix: str) -> None:
    client = backend.client()
    src, dst = f"{{{prefix}}}:a", f"{{{prefix}}}:b"
    client.set(src, 100)
    assert LIBRARY.call(client, "transfer", keys=[src, dst], args=[30]) == 70
    with backend.counter() as seen:
        assert LIBRARY.call(client, "transfer", keys=[src, dst], args=[30]) == 40
    assert seen.names == ["FCALL"]
    assert LIBRARY.call(client, "transfer", keys=[src, dst], args=[1000]) is None


def test_recovers_from_function_flush(backend: Backend, prefix: str) -> None:
    client = backend.client()
    src, dst = f"{{{prefix}}}:a", f"{{{prefix}}}:b"
    client.set(src, 10)
    LIBRARY.call(client, "transfer", keys=[src, dst], args=[1])
    _flush(backend)
    with backend.counter() as seen:
        assert LIBRARY.call(client, "transfer", keys=[src, dst], args=[1]) == 8
    # FCALL refused, the library loaded (on every primary of a cluster), FCALL again.
    loads = len(backend.servers)
    assert sorted(seen.names) == ["FCALL", "FCALL", *["FUNCTION"] * loads]
    port = client.get_node_from_key(src).port if backend.is_cluster else backend.servers[0].port  # type: ignore[union-attr]
    on_owner = [c.name for c in seen.commands if c.node.endswith(f":{port}")]
    assert on_owner == ["FCALL", "FUNCTION", "FCALL"]
    assert int(client.get(dst) or 0) == 2


async def test_async_recovers_from_function_flush(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    src, dst = f"{{{prefix}}}:a", f"{{{prefix}}}:b"
    await client.set(src, 10)
    _flush(backend)
    assert await LIBRARY.call(client, "transfer", keys=[src, dst], args=[4]) == 6
    with backend.counter() as seen:
        assert await LIBRARY.call(client, "transfer", keys=[src, dst], args=[4]) == 2
    assert seen.names == ["FCALL"]
    await client.aclose()


def test_function_error_is_a_script_error(backend: Backend, prefix: str) -> None:
    client = backend.client()
    with pytest.raises(ScriptError, match="refused: because"):
        LIBRARY.call(client, "refuse", keys=[f"{prefix}:x"], args=["because"])
    with pytest.raises(ScriptError, match=r"(?i)function not found"):
        LIBRARY.call(client, "no_such_function", keys=[f"{prefix}:x"])


@pytest.mark.backends("cluster")
def test_cross_slot_keys_refused_before_io(backend: Backend, prefix: str) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(CrossSlotError, match="hash tag"):
        LIBRARY.call(client, "transfer", keys=[f"{prefix}:a", f"{prefix}:b", f"{prefix}:c"])
    assert seen.count == 0


def test_bad_function_name_refused_before_io(backend: Backend) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        LIBRARY.call(client, "bad name; FLUSHALL")
    assert seen.count == 0


@pytest.mark.parametrize(
    "source", ["", "redis.register_function('f', function() end)", "#!js name=x"]
)
def test_library_needs_a_lua_header(source: str) -> None:
    with pytest.raises(ConfigurationError, match="#!lua name="):
        FunctionLibrary(source)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "wallet.lua"
    path.write_text(SOURCE)
    assert FunctionLibrary.from_file(path).name == "rp_test_wallet"
    with pytest.raises(TypeError):
        FunctionLibrary(42)  # type: ignore[arg-type]


def test_load_explicitly(client: Any) -> None:
    assert LIBRARY.load(client) == "rp_test_wallet"
