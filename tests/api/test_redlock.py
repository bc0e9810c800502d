"""Redlock on 5 independent servers: semantics, commands per node, bad input, plan logic."""

from __future__ import annotations

import gc
import math
import threading
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncRedlock,
    ConfigurationError,
    EmbeddedCluster,
    EmbeddedServer,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    Redlock,
)
from redis_patterns._core.redlock import EPOCH_KEY, RedlockCore
from redis_patterns._plan import Gather, Now, Sleep, run_canned
from redis_patterns.testing.counter import CommandCounter


def _clients(nodes: list[EmbeddedServer], **kwargs: Any) -> list[redis.Redis]:
    return [node.client(socket_timeout=5, **kwargs) for node in nodes]


def _counter(nodes: list[EmbeddedServer]) -> CommandCounter:
    return CommandCounter([("127.0.0.1", node.port or 0) for node in nodes])


def test_acquire_release(redlock_nodes: list[EmbeddedServer], prefix: str) -> None:
    clients = _clients(redlock_nodes)
    lock = Redlock(clients, prefix, ttl=5, node_timeout=0.5)
    assert lock.quorum == 3
    assert lock.acquire()
    assert lock.fence is None
    assert lock.validity is not None
    assert 0 < lock.validity < 5
    assert all(c.get(lock.key) == str(lock.token).encode() for c in clients)
    assert lock.owned()
    assert lock.locked()
    remaining = lock.ttl()
    assert remaining is not None
    assert 0 < remaining <= 5
    rival = Redlock(clients, prefix, ttl=5, node_timeout=0.5, retries=1, retry_delay=0.01)
    assert rival.acquire() is False
    assert all(c.get(lock.key) == str(lock.token).encode() for c in clients)  # rival cleaned up
    lock.extend(10)
    assert (lock.ttl() or 0) > 5
    lock.release()
    assert not any(c.exists(lock.key) for c in clients)
    assert not lock.locked()
    assert lock.ttl() is None
    with pytest.raises(LockNotOwnedError):
        lock.release()
    with rival:
        assert rival.owned()
    assert not rival.locked()


def test_one_command_per_node(redlock_nodes: list[EmbeddedServer], prefix: str) -> None:
    clients = _clients(redlock_nodes)
    lock = Redlock(clients, prefix, ttl=5, node_timeout=0.5)
    lock.acquire()
    lock.extend()
    lock.release()  # scripts cached on every node
    with _counter(redlock_nodes) as seen:
        lock.acquire()
    assert seen.names == ["SET"] * 5
    with _counter(redlock_nodes) as seen:
        lock.extend()
    assert seen.names == ["EVALSHA"] * 5
    with _counter(redlock_nodes) as seen:
        lock.release()
    assert seen.names == ["EVALSHA"] * 5
    assert len({c.node for c in seen.commands}) == 5


def test_restart_guard_is_still_one_command_per_node(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    clients = _clients(redlock_nodes)
    for client in clients:
        client.set(EPOCH_KEY, 0, nx=True)  # provisioned: these servers never lost data
    lock = Redlock(clients, prefix, ttl=5, node_timeout=0.5, restart_guard=5)
    assert lock.acquire()
    lock.release()
    with _counter(redlock_nodes) as seen:
        assert lock.acquire()
    assert seen.names == ["EVALSHA"] * 5
    lock.release()


async def test_async_redlock(redlock_nodes: list[EmbeddedServer], prefix: str) -> None:
    clients = [node.client(asyncio=True, socket_timeout=5) for node in redlock_nodes]
    lock = AsyncRedlock(clients, prefix, ttl=5, node_timeout=0.5)
    rival = AsyncRedlock(clients, prefix, ttl=5, node_timeout=0.5, retries=0)
    async with lock:
        assert await lock.owned()
        with pytest.raises(LockTimeoutError):
            async with rival:
                pass
        with pytest.raises(LockError):
            await lock.acquire()
    assert not await lock.locked()
    for client in clients:
        await client.aclose()


def test_duplicate_server_by_run_id(redlock_nodes: list[EmbeddedServer], prefix: str) -> None:
    port = redlock_nodes[0].port
    clients = [
        redis.Redis(host="localhost", port=port or 0, retry=Retry(NoBackoff(), 0)),
        *_clients(redlock_nodes),
    ]
    lock = Redlock(clients, prefix)  # different addresses: no I/O, so not caught here
    with pytest.raises(ConfigurationError, match="same server"):
        lock.verify_servers()
    Redlock(_clients(redlock_nodes), prefix).verify_servers()


BAD: list[tuple[str, Any]] = [
    ("two clients", {"n": 2}),
    ("no clients", {"n": 0}),
    ("same port twice", {"dup": "port"}),
    ("same server other db", {"dup": "db"}),
    ("drift too big", {"drift_factor": 0.2}),
    ("drift negative", {"drift_factor": -0.01}),
    ("drift nan", {"drift_factor": math.nan}),
    ("ttl zero", {"ttl": 0}),
    ("ttl inf", {"ttl": math.inf}),
    ("ttl nan", {"ttl": math.nan}),
    ("retries negative", {"retries": -1}),
    ("retries float", {"retries": 1.5}),
    ("node timeout >= ttl/N", {"ttl": 1, "node_timeout": 0.2}),
    ("retry delay zero", {"retry_delay": 0}),
    ("restart guard < ttl", {"ttl": 5, "restart_guard": 1}),
    ("empty name", {"name": ""}),
    ("name not str", {"name": 5}),
]


@pytest.mark.parametrize(("case", "spec"), BAD, ids=[c for c, _ in BAD])
def test_bad_input_before_io(
    redlock_nodes: list[EmbeddedServer], prefix: str, case: str, spec: dict[str, Any]
) -> None:
    spec = dict(spec)
    clients: list[Any] = _clients(redlock_nodes)[: spec.pop("n", 5)]
    dup = spec.pop("dup", None)
    if dup == "port":
        clients = [*clients[:4], redlock_nodes[0].client()]
    elif dup == "db":
        clients = [*clients[:4], redlock_nodes[0].client(db=1)]
    name = spec.pop("name", prefix)
    with _counter(redlock_nodes) as seen, pytest.raises(ConfigurationError):
        Redlock(clients, name, **spec).acquire()
    assert seen.count == 0


def test_wrong_clients_are_type_errors(redlock_nodes: list[EmbeddedServer]) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        AsyncRedlock(_clients(redlock_nodes), "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Redlock(_clients(redlock_nodes)[0], "x")  # type: ignore[arg-type]


def test_unheld_release_and_extend_before_io(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    lock = Redlock(_clients(redlock_nodes), prefix)
    with _counter(redlock_nodes) as seen:
        with pytest.raises(LockNotOwnedError):
            lock.release()
        with pytest.raises(LockNotOwnedError):
            lock.extend()
        with pytest.raises(ConfigurationError):
            lock.acquire(blocking=False, timeout=1)
    assert seen.count == 0


# --- the plan alone, on canned replies (no server, no clock) ------------------------------


def _core(**kwargs: Any) -> RedlockCore:
    options: dict[str, Any] = {
        "ttl": 10.0,
        "drift_factor": 0.01,
        "retries": 0,
        "retry_delay": 0.1,
        "node_timeout": 0.5,
        "timeout": None,
    }
    options.update(kwargs)
    return RedlockCore([f"n{i}" for i in range(5)], "x", **options)


def test_plan_validity_is_ttl_minus_elapsed_minus_drift() -> None:
    core = _core()
    (acquired, _), effects = run_canned(
        core.acquire(False, None), [100.0, 100.0, [True, True, True, None, None], 101.5]
    )
    assert acquired
    assert core.validity == pytest.approx(10 - 1.5 - (0.1 + 0.002))
    assert isinstance(effects[2], Gather)
    assert len(effects[2].effects) == 5


def test_plan_too_slow_majority_fails_and_unlocks_everywhere() -> None:
    # Scenario 10: the replies took longer than ttl - drift: no lock, and clean-up on all 5.
    core = _core()
    (acquired, _), effects = run_canned(
        core.acquire(False, None),
        [100.0, 100.0, [True] * 5, 109.9, [1, 1, 1, 1, 1]],
    )
    assert acquired is False
    assert not core.held
    cleanup = effects[-1]
    assert isinstance(cleanup, Gather)
    assert len(cleanup.effects) == 5


def test_plan_minority_fails_and_retries_with_jitter() -> None:
    core = _core(retries=1)
    minority = [True, True, None, TimeoutError(), None]
    (acquired, _), effects = run_canned(
        core.acquire(True, None),
        [0.0, 0.0, minority, 0.1, [1, 1, 0, 0, 0], 0.2, None, 0.3, minority, 0.4, [0] * 5],
    )
    assert acquired is False
    sleeps = [e for e in effects if isinstance(e, Sleep)]
    assert len(sleeps) == 1
    assert 0.05 <= sleeps[0].seconds <= 0.1
    assert sum(isinstance(e, Now) for e in effects) >= 4


def test_validity_never_exceeds_majority_pttl(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    # Scenario 10: the validity we report is covered by the servers' own expiry. (The drift
    # allowance, 0.3 s at ttl 30, absorbs the delay between `before` and the servers' PTTL.)
    lock = Redlock(_clients(redlock_nodes), prefix, ttl=30, node_timeout=0.5)
    for _ in range(5):
        assert lock.acquire()
        assert lock.valid_until is not None
        before = time.monotonic()
        remaining = lock.ttl()  # the majority's PTTL, sampled after `before`
        assert remaining is not None
        assert lock.valid_until - before <= remaining + 0.001  # + PTTL's 1 ms rounding
        lock.release()


def test_redlock_watchdog_renews_and_reports_loss(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    clients = _clients(redlock_nodes)
    lost = threading.Event()
    lock = Redlock(
        clients, prefix, ttl=1, node_timeout=0.15, auto_renew=True, on_lost=lambda _: lost.set()
    )
    rival = Redlock(clients, prefix, ttl=1, node_timeout=0.15, retries=0)
    assert lock.acquire()
    deadline = time.monotonic() + 2.5  # 2.5 x ttl
    while time.monotonic() < deadline:
        assert rival.acquire(blocking=False) is False
        time.sleep(0.05)
    assert lock.owned()
    assert not lost.is_set()
    for client in clients[:3]:
        client.delete(lock.key)  # a majority forgets the lock
    assert lost.wait(10)
    assert lock.lost
    assert not any(c.exists(lock.key) for c in clients)  # released everywhere on loss
    with pytest.raises(LockNotOwnedError):
        lock.release()


def test_redlock_watchdog_stops_on_release(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    lock = Redlock(_clients(redlock_nodes), prefix, ttl=0.6, node_timeout=0.1, auto_renew=True)
    assert lock.acquire()
    time.sleep(0.3)
    lock.release()
    with _counter(redlock_nodes) as seen:
        time.sleep(0.5)
    assert seen.count == 0


def _drop_and_expire(holder: list[Redlock], clients: list[redis.Redis], key: bytes) -> None:
    """Drop the last reference; then (bounded) no server's PTTL of ``key`` ever grows until
    every one has expired it."""
    holder.clear()
    gc.collect()
    last = [1000] * len(clients)
    deadline = time.monotonic() + 10
    while any(p != -2 for p in last):
        for i, client in enumerate(clients):
            pttl = int(client.pttl(key))
            assert pttl == -2 or 0 <= pttl <= last[i], f"node {i} renewed: {pttl}"
            last[i] = pttl
        assert time.monotonic() < deadline, "the key did not expire"
        time.sleep(0.02)


def test_dropped_redlock_stops_renewing_and_expires(
    redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    # Regression (issue 13.7): a Redlock dropped while auto-renewing was renewed forever.
    clients = _clients(redlock_nodes)
    holder = [Redlock(clients, prefix, ttl=1, node_timeout=0.15, auto_renew=True)]
    assert holder[0].acquire()
    key, token = holder[0].key, holder[0].token
    assert token is not None
    with _counter(redlock_nodes) as seen:
        with pytest.warns(ResourceWarning, match=f"^Redlock {prefix!r} was garbage-collected"):
            _drop_and_expire(holder, clients, key)
        rival = Redlock(clients, prefix, ttl=1, node_timeout=0.15, retries=0)
        assert rival.acquire(blocking=False)
        rival.release()
    assert not [c for c in seen.commands if token in c.args]


def test_redlock_with_decode_responses(redlock_nodes: list[EmbeddedServer], prefix: str) -> None:
    lock = Redlock(_clients(redlock_nodes, decode_responses=True), prefix, ttl=5, node_timeout=0.5)
    assert lock.acquire()
    assert lock.owned()
    lock.extend()
    lock.release()
    assert not lock.locked()


def test_cluster_clients_are_refused(cluster: EmbeddedCluster) -> None:
    with pytest.raises(TypeError, match="standalone"):
        Redlock([cluster.client() for _ in range(3)], "x")
