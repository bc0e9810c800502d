"""pytest fixtures on real servers: Valkey, Redis 7, clusters, Sentinel, 5 Redlock nodes.

Installed with the package as a pytest plugin (entry point ``redis_patterns``), so your own
tests can use the same fixtures. Every name starts with ``rp_``, so none collides with an
application's own fixtures (a test asking for an undefined ``client`` fails as it should, rather
than running against three servers):

- ``rp_valkey_server``, ``rp_redis7_server``, ``rp_cluster``, ``rp_redlock_nodes``: session-wide
  servers.
- ``rp_backend``: one of ``valkey`` / ``redis7`` / ``cluster`` (parametrized), with ``client()``,
  ``async_client()`` and ``counter()``; ``rp_client`` and ``rp_async_client`` are shortcuts.
- ``rp_prefix``: a unique name per test, so tests never share keys and never need FLUSHALL.
- ``rp_scale(small, full)``: the small count normally, the full one under ``--soak``.
- Faults (see ``docs/testing.md``): ``rp_server_factory(binary=None, **options)`` starts a
  private `EmbeddedServer` for one test (restart it, pause it, change its config freely);
  ``rp_fault_proxy(target, seed=0)`` starts a `FaultProxy` in front of a server.
- Failovers (see ``docs/testing.md``), a fresh topology per test, parametrized over ``valkey`` and
  ``redis7``: ``rp_replicated_cluster`` is 3 masters + 3 replicas (`EmbeddedCluster` with
  ``replicas=1``), ``rp_sentinel`` a primary + 2 replicas + 3 Sentinels (`SentinelTopology`).
  ``rp_cluster_factory(...)`` and ``rp_sentinel_factory(...)`` build other shapes.

Redis 7 comes from Debian's ``redis-server`` on PATH; without it those tests are skipped with
the reason shown, unless ``REDIS_PATTERNS_REQUIRE_REDIS7=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from .. import _logging
from .._embedded import EmbeddedServer
from .._embedded_cluster import EmbeddedCluster
from .counter import CommandCounter
from .proxy import FaultProxy
from .sentinel import SentinelTopology

__all__ = ["Backend", "faketime_or_skip", "independent_servers"]

REQUIRE_REDIS7 = "REDIS_PATTERNS_REQUIRE_REDIS7"
REQUIRE_FAKETIME = "REDIS_PATTERNS_REQUIRE_FAKETIME"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
# How long a backend's client may take to open a connection (see Backend.client).
CONNECT_TIMEOUT = 10.0
# The servers a failover topology fixture runs on (its parameters).
_TOPOLOGY_KINDS = ["valkey", "redis7"]


def faketime_or_skip() -> str:
    """The path of libfaketime (Debian's ``faketime``); skip the test when it is missing, or
    fail instead when ``REDIS_PATTERNS_REQUIRE_FAKETIME=1`` (CI installs it)."""
    if not os.path.exists(FAKETIME_LIB):
        reason = "libfaketime is not installed (Debian package faketime)"
        if os.environ.get(REQUIRE_FAKETIME) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_FAKETIME}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return FAKETIME_LIB


_names = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redis-patterns")
    group.addoption(
        "--soak", action="store_true", help="run fault scenarios with their full counts"
    )
    group.addoption(
        "--backends",
        default="valkey,redis7,cluster",
        help="comma-separated backends for the `rp_backend` fixture (valkey, redis7, cluster)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Repeated warnings are coalesced per process; each test starts with none logged yet, so
    # its log assertions do not depend on what an earlier test logged.
    _logging.reset()


def pytest_unconfigure(config: pytest.Config) -> None:
    # The last test's suppressed counts would otherwise be written at exit, after the report.
    _logging.reset()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): limit the `rp_backend` fixture")


def _redis7_or_skip() -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server (Redis 7) is not on PATH"
        if os.environ.get(REQUIRE_REDIS7) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_REDIS7}=1 requires it", pytrace=False)
        pytest.skip(reason)


def _binary(kind: str | None) -> str | None:
    """The server binary for a topology kind: ``None``/``"valkey"`` is the embedded Valkey,
    ``"redis7"`` Debian's ``redis-server`` (skipped or failed when missing); others as given."""
    if kind in (None, "valkey"):
        return None
    if kind == "redis7":
        _redis7_or_skip()
        return "redis-server"
    return kind


@pytest.fixture(scope="session")
def rp_valkey_server() -> Iterator[EmbeddedServer]:
    """The embedded Valkey 9 server, shared by the session."""
    with EmbeddedServer() as server:
        yield server


@pytest.fixture(scope="session")
def rp_redis7_server() -> Iterator[EmbeddedServer]:
    """Debian's redis-server 7, shared by the session (skipped when not installed)."""
    _redis7_or_skip()
    with EmbeddedServer("redis-server") as server:
        yield server


@pytest.fixture(scope="session")
def rp_cluster() -> Iterator[EmbeddedCluster]:
    """A 3-master Valkey cluster, shared by the session."""
    with EmbeddedCluster(3) as embedded:
        yield embedded


@contextlib.contextmanager
def independent_servers(count: int) -> Iterator[list[EmbeddedServer]]:
    """``count`` started, unrelated Valkey servers, all stopped (even if paused) on exit."""
    servers = [EmbeddedServer() for _ in range(count)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()  # SIGCONTs a paused server first
            server.cleanup()


@pytest.fixture(scope="session")
def rp_redlock_nodes() -> Iterator[list[EmbeddedServer]]:
    """Five independent Valkey servers for Redlock."""
    with independent_servers(5) as servers:
        yield servers


@dataclass
class Backend:
    """A server topology under test and the clients for it."""

    kind: str
    servers: list[EmbeddedServer]
    embedded_cluster: EmbeddedCluster | None = None
    _opened: list[Any] = field(default_factory=list)

    @property
    def is_cluster(self) -> bool:
        return self.embedded_cluster is not None

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.servers if s.port is not None]

    def client(self, **kwargs: Any) -> redis.Redis | redis.cluster.RedisCluster:
        """A new sync client (closed at the end of the test).

        Unless given, a connection may take 10 s to open (connect()'s default is 2 s): on a
        loaded test machine a local connect has taken longer than 2 s.
        """
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
        made: redis.Redis | redis.cluster.RedisCluster
        if self.embedded_cluster is not None:
            made = self.embedded_cluster.client(**kwargs)
        else:
            made = self.servers[0].client(**kwargs)
        self._opened.append(made)
        return made

    def async_client(
        self, **kwargs: Any
    ) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
        """A new asyncio client (close it with ``await client.aclose()``).

        Its pool allows 512 connections, so a test can run hundreds of concurrent tasks; a
        connection may take 10 s to open, as for `client`.
        """
        kwargs.setdefault("max_connections", 512)
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
        made: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        if self.embedded_cluster is not None:
            made = self.embedded_cluster.client(asyncio=True, **kwargs)
        else:
            made = self.servers[0].client(asyncio=True, **kwargs)
        self._opened.append(made)
        return made

    def scan(self, match: str) -> list[bytes]:
        """Every key matching the glob ``match``, by SCAN on each node (a cluster's masters)."""
        found: list[bytes] = []
        for server in self.servers:
            with server.client() as node:
                found.extend(node.scan_iter(match=match, count=1000))
        return found

    def flush_scripts(self) -> None:
        """``SCRIPT FLUSH`` on every node: the next script call meets ``NOSCRIPT``."""
        for server in self.servers:
            with server.client() as node:
                node.script_flush()

    def counter(self) -> CommandCounter:
        """A `CommandCounter` over every node of this backend."""
        return CommandCounter(self.nodes)

    def close_sync(self) -> None:
        for made in self._opened:
            if isinstance(made, redis.Redis | redis.cluster.RedisCluster):
                made.close()


def _selected_backends(config: pytest.Config) -> list[str]:
    return [b.strip() for b in str(config.getoption("--backends")).split(",") if b.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rp_backend_kind" in metafunc.fixturenames:
        kinds = _selected_backends(metafunc.config)
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is not None:
            kinds = [k for k in kinds if k in marker.args]
        metafunc.parametrize("rp_backend_kind", kinds, scope="session")


@pytest.fixture
def rp_backend(rp_backend_kind: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The topology under test: parametrized over valkey, redis7 and cluster."""
    if rp_backend_kind == "valkey":
        made = Backend("valkey", [request.getfixturevalue("rp_valkey_server")])
    elif rp_backend_kind == "redis7":
        made = Backend("redis7", [request.getfixturevalue("rp_redis7_server")])
    elif rp_backend_kind == "cluster":
        embedded: EmbeddedCluster = request.getfixturevalue("rp_cluster")
        made = Backend("cluster", list(embedded.nodes), embedded)
    else:
        raise pytest.UsageError(f"unknown backend {rp_backend_kind!r}")
    yield made
    made.close_sync()


@pytest.fixture
def rp_client(rp_backend: Backend) -> redis.Redis | redis.cluster.RedisCluster:
    """A sync client for ``rp_backend``."""
    return rp_backend.client()


@pytest.fixture
async def rp_async_client(
    rp_backend: Backend,
) -> AsyncIterator[redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster]:
    """An asyncio client for ``backend`` (closed on the test's own event loop)."""
    made = rp_backend.async_client()
    yield made
    await made.aclose()


@pytest.fixture
def rp_prefix(request: pytest.FixtureRequest) -> str:
    """A name unique to this test (and this session), to build keys from."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"t{os.getpid()}-{next(_names)}-{stem}"


@pytest.fixture
def rp_scale(request: pytest.FixtureRequest) -> Callable[[int, int], int]:
    """``rp_scale(small, full)``: the per-commit count, or the soak count under ``--soak``."""
    soak = bool(request.config.getoption("--soak"))

    def pick(small: int, full: int) -> int:
        return full if soak else small

    return pick


_Made = TypeVar("_Made")


@contextlib.contextmanager
def _factory(build: Callable[..., AbstractContextManager[_Made]]) -> Iterator[Callable[..., _Made]]:
    """``make(*args, **options)``: ``build(...)`` entered (started); on exit every object made
    is exited (stopped, cleaned up), the last first, even one whose start failed."""
    with contextlib.ExitStack() as stack:

        def make(*args: Any, **options: Any) -> _Made:
            made = build(*args, **options)
            stack.push(made)
            return made.__enter__()

        yield make


@pytest.fixture
def rp_server_factory() -> Iterator[Callable[..., EmbeddedServer]]:
    """``rp_server_factory(binary=None, **options)``: a started private `EmbeddedServer`.

    ``binary="redis7"`` means Debian's ``redis-server`` (skipped or failed like
    ``rp_redis7_server`` when missing). Every server is stopped at the end of the test.
    """

    def build(binary: str | None = None, **options: Any) -> EmbeddedServer:
        return EmbeddedServer(_binary(binary), **options)

    with _factory(build) as make:
        yield make


@pytest.fixture
def rp_fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """``rp_fault_proxy(target, seed=0)``: a started `FaultProxy` in front of ``target``."""

    def build(target: Any, seed: int | None = 0) -> FaultProxy:
        return FaultProxy(target, seed=seed)

    with _factory(build) as make:
        yield make


@pytest.fixture
def rp_cluster_factory() -> Iterator[Callable[..., EmbeddedCluster]]:
    """``rp_cluster_factory(masters=3, replicas=1, binary=None, **options)``: a started private
    `EmbeddedCluster` (``binary="redis7"`` for Redis 7); every one is stopped after the test."""

    def build(
        masters: int = 3, replicas: int = 1, binary: str | None = None, **options: Any
    ) -> EmbeddedCluster:
        return EmbeddedCluster(masters, _binary(binary), replicas=replicas, **options)

    with _factory(build) as make:
        yield make


@pytest.fixture
def rp_sentinel_factory() -> Iterator[Callable[..., SentinelTopology]]:
    """``rp_sentinel_factory(binary=None, **options)``: a started private `SentinelTopology`
    (``binary="redis7"`` for Redis 7); every one is stopped after the test."""

    def build(binary: str | None = None, **options: Any) -> SentinelTopology:
        return SentinelTopology(binary=_binary(binary), **options)

    with _factory(build) as make:
        yield make


@pytest.fixture(params=_TOPOLOGY_KINDS)
def rp_replicated_cluster(
    request: pytest.FixtureRequest, rp_cluster_factory: Callable[..., EmbeddedCluster]
) -> EmbeddedCluster:
    """A fresh cluster of 3 masters, each with one replica in sync, for one test (failovers
    change it); parametrized over ``valkey`` and ``redis7``."""
    return rp_cluster_factory(3, 1, request.param)


@pytest.fixture(params=_TOPOLOGY_KINDS)
def rp_sentinel(
    request: pytest.FixtureRequest, rp_sentinel_factory: Callable[..., SentinelTopology]
) -> SentinelTopology:
    """A fresh primary + 2 replicas + 3 Sentinels, for one test (failovers change it);
    parametrized over ``valkey`` and ``redis7``."""
    return rp_sentinel_factory(request.param)
