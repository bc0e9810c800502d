"""Suite-wide settings: repeatable Hypothesis runs, and the plugin's fixtures under short names."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from redis_patterns import EmbeddedCluster, EmbeddedServer
from redis_patterns.testing import SentinelTopology
from redis_patterns.testing.pytest_plugin import Backend

# CI must not fail on an example a random seed happened to find today and not tomorrow:
# the default profile is derandomized (same examples every run), keeps no example database,
# and has no per-example deadline (examples that talk to a server on a loaded 2-core machine
# vary in time). `HYPOTHESIS_PROFILE=explore` searches with fresh random seeds.
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


# The shipped plugin's fixtures are named ``rp_*`` so that they never collide with an
# application's. This suite predates the prefix and asks for the short names: each alias below
# is the plugin's fixture under its old name, with the same scope (a parametrized fixture's
# parameters carry over to its alias).


@pytest.fixture(scope="session")
def valkey_server(rp_valkey_server: EmbeddedServer) -> EmbeddedServer:
    return rp_valkey_server


@pytest.fixture(scope="session")
def redis7_server(rp_redis7_server: EmbeddedServer) -> EmbeddedServer:
    return rp_redis7_server


@pytest.fixture(scope="session")
def cluster(rp_cluster: EmbeddedCluster) -> EmbeddedCluster:
    return rp_cluster


@pytest.fixture(scope="session")
def redlock_nodes(rp_redlock_nodes: list[EmbeddedServer]) -> list[EmbeddedServer]:
    return rp_redlock_nodes


@pytest.fixture
def backend(rp_backend: Backend) -> Backend:
    return rp_backend


@pytest.fixture
def client(rp_client: Any) -> Any:
    return rp_client


@pytest.fixture
def async_client(rp_async_client: Any) -> Any:
    return rp_async_client


@pytest.fixture
def prefix(rp_prefix: str) -> str:
    return rp_prefix


@pytest.fixture
def scale(rp_scale: Callable[[int, int], int]) -> Callable[[int, int], int]:
    return rp_scale


@pytest.fixture
def server_factory(rp_server_factory: Callable[..., Any]) -> Callable[..., Any]:
    return rp_server_factory


@pytest.fixture
def fault_proxy(rp_fault_proxy: Callable[..., Any]) -> Callable[..., Any]:
    return rp_fault_proxy


@pytest.fixture
def cluster_factory(rp_cluster_factory: Callable[..., Any]) -> Callable[..., Any]:
    return rp_cluster_factory


@pytest.fixture
def sentinel_factory(rp_sentinel_factory: Callable[..., Any]) -> Callable[..., Any]:
    return rp_sentinel_factory


@pytest.fixture
def replicated_cluster(rp_replicated_cluster: EmbeddedCluster) -> EmbeddedCluster:
    return rp_replicated_cluster


@pytest.fixture
def sentinel(rp_sentinel: SentinelTopology) -> SentinelTopology:
    return rp_sentinel


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Collect, quietly, what redis-py's asyncio cluster clients leave to the collector.

    Their ``ClusterNode`` objects (for a node's second name, or replaced when the slot map is
    read again) keep their sockets past the client's ``aclose()``, and each warns when it is
    collected. Left to pytest's own collection after the session, one such warning fails a run
    whose every test passed (seen once on Python 3.10, not reproduced). Inside a test any
    ResourceWarning still fails it (``filterwarnings = error``); tests/unit/test_background.py
    collects the same way before its measured window.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
