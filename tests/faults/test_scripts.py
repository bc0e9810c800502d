"""Scenario 40 and Script must-shows: BUSY is typed and recovers; NOSCRIPT reloads transparently."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

import redis_patterns
from redis_patterns import (
    AsyncBoundedCounter,
    BoundedCounter,
    EmbeddedServer,
    ScriptError,
    ServerBusyError,
)
from redis_patterns.testing import CommandCounter
from redis_patterns.testing.pytest_plugin import Backend

pytestmark = pytest.mark.fault

WAIT = 20.0  # bound for every wait below (the machine is loaded; this is never reached normally)
BINARIES = [pytest.param(None, id="valkey"), pytest.param("redis7", id="redis7")]


class BusyScript:
    """Another client running an endless Lua loop, until ``SCRIPT KILL``."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.outcome: list[BaseException | object] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client(socket_timeout=WAIT) as client:
            try:
                self.outcome.append(client.eval("while true do end", 0))
            except BaseException as exc:
                self.outcome.append(exc)

    def start(self) -> None:
        self._thread.start()
        # Bounded wait until the server answers BUSY (past busy-reply-threshold).
        with self.server.client(socket_timeout=WAIT) as probe:
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    probe.ping()
                except redis.ResponseError as exc:
                    if str(exc).startswith("BUSY"):
                        return
                    raise
                assert time.monotonic() < deadline, "the foreign script never made the server BUSY"
                time.sleep(0.02)

    def kill(self) -> None:
        with self.server.client(socket_timeout=WAIT) as admin:
            assert admin.script_kill()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        assert isinstance(self.outcome[0], redis.ResponseError)  # the killed script's own error


@pytest.fixture(params=BINARIES)
def busy_server(request: pytest.FixtureRequest, server_factory: Any) -> EmbeddedServer:
    server: EmbeddedServer = server_factory(request.param, config={"busy-reply-threshold": 100})
    return server


def _incr_until_ok(incr: Callable[[], int | None]) -> tuple[int | None, int]:
    """Call until it succeeds (bounded): the killed script may take a moment to unwind."""
    busy = 0
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return incr(), busy
        except ServerBusyError:
            busy += 1
            assert time.monotonic() < deadline, "still BUSY long after SCRIPT KILL"
            time.sleep(0.01)


def test_foreign_busy_script_is_typed_and_recovers(
    busy_server: EmbeddedServer, prefix: str
) -> None:
    with redis_patterns.connect(busy_server.url, socket_timeout=WAIT) as client:
        counter = BoundedCounter(client, f"{prefix}:c", 10)
        assert counter.incr() == 1
        busy = BusyScript(busy_server)
        busy.start()
        with pytest.raises(ServerBusyError, match="BUSY") as caught:
            counter.incr()
        assert isinstance(caught.value, ScriptError)  # a ServerBusyError is a ScriptError
        with pytest.raises(ServerBusyError):
            counter.value()  # plain commands are refused the same way
        busy.kill()
        value, _ = _incr_until_ok(counter.incr)
        assert value == 2  # the refused calls did not run
        assert counter.value() == 2


async def test_async_foreign_busy_script_is_typed_and_recovers(
    busy_server: EmbeddedServer, prefix: str
) -> None:
    client = redis_patterns.connect(busy_server.url, asyncio=True, socket_timeout=WAIT)
    try:
        counter = AsyncBoundedCounter(client, f"{prefix}:c", 10)
        assert await counter.incr() == 1
        busy = BusyScript(busy_server)
        busy.start()
        with pytest.raises(ServerBusyError, match="BUSY"):
            await counter.incr()
        busy.kill()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                assert await counter.incr() == 2
                break
            except ServerBusyError:
                assert time.monotonic() < deadline
        assert await counter.value() == 2
    finally:
        await client.aclose()


# --- NOSCRIPT: SCRIPT FLUSH and restarts ---------------------------------------------------------


def _flush_scripts(backend: Backend) -> None:
    for server in backend.servers:
        with server.client() as node:
            node.script_flush()


def test_script_reloads_after_script_flush(backend: Backend, prefix: str) -> None:
    counter = BoundedCounter(backend.client(), f"{prefix}:c", 10)
    assert counter.incr() == 1
    _flush_scripts(backend)
    with backend.counter() as seen:
        assert counter.incr() == 2
    assert seen.names == ["EVALSHA", "EVAL"]  # NOSCRIPT, then the source once
    with backend.counter() as seen:
        assert counter.incr() == 3
    assert seen.names == ["EVALSHA"]


async def test_async_script_reloads_after_script_flush(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    try:
        counter = AsyncBoundedCounter(client, f"{prefix}:c", 10)
        assert await counter.incr() == 1
        _flush_scripts(backend)
        with backend.counter() as seen:
            assert await counter.incr() == 2
        assert seen.names == ["EVALSHA", "EVAL"]
    finally:
        await client.aclose()


@pytest.fixture(params=BINARIES)
def restartable(request: pytest.FixtureRequest, server_factory: Any) -> EmbeddedServer:
    server: EmbeddedServer = server_factory(request.param)
    return server


def test_script_reloads_after_restart_on_the_same_port(
    restartable: EmbeddedServer, prefix: str
) -> None:
    with redis_patterns.connect(restartable.url, socket_timeout=WAIT) as client:
        counter = BoundedCounter(client, f"{prefix}:c", 10)
        assert counter.incr() == 1
        port, old_pid = restartable.port, restartable.pid
        assert port is not None
        restartable.restart()  # no persistence: the data and the script cache are gone
        assert restartable.port == port
        assert restartable.pid != old_pid
        with CommandCounter([("127.0.0.1", port)]) as seen:
            assert counter.incr() == 1
        assert seen.names == ["EVALSHA", "EVAL"]


async def test_async_script_reloads_after_restart_on_the_same_port(
    restartable: EmbeddedServer, prefix: str
) -> None:
    client = redis_patterns.connect(restartable.url, asyncio=True, socket_timeout=WAIT)
    try:
        counter = AsyncBoundedCounter(client, f"{prefix}:c", 10)
        assert await counter.incr() == 1
        port = restartable.port
        # In a thread, so the event loop keeps running and sees the old connection close, as
        # it would in a live application (a loop blocked by the restart could not).
        await asyncio.to_thread(restartable.restart)
        assert port is not None
        with CommandCounter([("127.0.0.1", port)]) as seen:
            assert await counter.incr() == 1
        assert seen.names == ["EVALSHA", "EVAL"]
    finally:
        await client.aclose()
