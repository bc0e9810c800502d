"""`pack_commands` writes the bytes redis-py would, and refuses what redis-py refuses."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_patterns._redis_steps import pack_commands

CONNECTIONS: list[Any] = [redis.asyncio.connection.Connection, redis.connection.Connection]

_ARG = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.binary().map(lambda raw: memoryview(raw)),
    st.binary().map(bytearray),  # hiredis refuses it, redis-py packs it
)
_COMMAND = st.tuples(st.sampled_from(["GET", "EVALSHA", "MGET", "CONFIG GET", b"SET"])).flatmap(
    lambda name: st.lists(_ARG, max_size=6).map(lambda rest: (*name, *rest))
)


def _flat(chunks: Any) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


@pytest.mark.parametrize("kind", CONNECTIONS)
@settings(max_examples=300, deadline=None)
@given(commands=st.lists(_COMMAND, min_size=1, max_size=4))
def test_the_bytes_are_redis_pys(kind: Any, commands: list[tuple[Any, ...]]) -> None:
    connection = kind()
    try:
        expected = _flat(connection.pack_commands(commands))
    except UnicodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeError):
            pack_commands(connection, commands)
        return
    assert _flat(pack_commands(connection, commands)) == expected


@pytest.mark.parametrize("kind", CONNECTIONS)
@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused_the_same_way(kind: Any, bad: object) -> None:
    connection = kind()
    with pytest.raises(redis.exceptions.DataError):
        connection.pack_commands([("SET", "k", bad)])
    with pytest.raises(redis.exceptions.DataError):
        pack_commands(connection, [("GET", "k"), ("SET", "k", bad)])


def test_another_encoding_is_redis_pys_own() -> None:
    connection = redis.asyncio.connection.Connection(encoding="latin-1")
    commands = [("SET", "k", "caf\u00e9")]
    assert _flat(pack_commands(connection, commands)) == _flat(connection.pack_commands(commands))
    assert b"caf\xe9" in _flat(pack_commands(connection, commands))
