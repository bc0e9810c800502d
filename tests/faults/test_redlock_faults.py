"""Redlock under faults: servers killed or paused, contention across processes, documented limits.

RELIABILITY scenarios 6 (quorum matrix), 7 (contention, minority faults), 8 (restart without
persistence: xfail), 9 (clock jump on one node: xfail), 10 (slow acquisition: see the plan
tests in tests/api/test_redlock.py). Destructive tests use their own five servers, never the
session-wide ``redlock_nodes``.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncRedlock,
    EmbeddedServer,
    FencedStore,
    Lock,
    LockNotOwnedError,
    Redlock,
    StaleFenceError,
)
from redis_patterns._core.redlock import EPOCH_KEY
from redis_patterns.testing.pytest_plugin import independent_servers

pytestmark = pytest.mark.fault

NODE_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def own_nodes() -> Iterator[list[EmbeddedServer]]:
    """Five servers of this module's own, so killing and pausing them harms no other test."""
    with independent_servers(5) as servers:
        yield servers


_opened: list[redis.Redis] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close the clients `_clients` made once the test is over (left to the garbage collector,
    their sockets were reported unclosed in whichever test came next)."""
    yield
    while _opened:
        _opened.pop().close()


def _clients(nodes: list[EmbeddedServer]) -> list[redis.Redis]:
    clients = [node.client(socket_timeout=2, socket_connect_timeout=2) for node in nodes]
    _opened.extend(clients)
    return clients


def _wait_up(node: EmbeddedServer) -> None:
    with node.client(socket_timeout=2) as client:
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.02)
        client.ping()


@contextmanager
def down(nodes: list[EmbeddedServer], which: tuple[int, ...], mode: str) -> Iterator[None]:
    """SIGKILL (refused connections) or SIGSTOP (hung) the chosen servers; undo on exit."""
    try:
        for i in which:
            if mode == "kill":
                nodes[i].kill()
            else:
                nodes[i].pause()
        yield
    finally:
        for i in which:
            if mode == "kill":
                nodes[i].start()
                _wait_up(nodes[i])
            else:
                nodes[i].resume()


def _keys_left(nodes: list[EmbeddedServer], which: list[int], key: bytes) -> int:
    left = 0
    for i in which:
        with nodes[i].client(socket_timeout=2) as client:
            left += client.exists(key)
    return left


@pytest.mark.parametrize("mode", ["kill", "stop"])
def test_works_with_two_servers_down(
    own_nodes: list[EmbeddedServer], prefix: str, mode: str
) -> None:
    with down(own_nodes, (1, 3), mode):
        lock = Redlock(_clients(own_nodes), prefix, ttl=5, node_timeout=NODE_TIMEOUT, retries=0)
        assert lock.acquire()
        assert lock.validity is not None
        assert lock.validity > 0
        assert _keys_left(own_nodes, [0, 2, 4], lock.key) == 3
        rival = Redlock(_clients(own_nodes), prefix, ttl=5, node_timeout=NODE_TIMEOUT, retries=0)
        assert rival.acquire() is False
        lock.release()
        assert _keys_left(own_nodes, [0, 2, 4], lock.key) == 0


@pytest.mark.parametrize("mode", ["kill", "stop"])
async def test_async_works_with_two_servers_down(
    own_nodes: list[EmbeddedServer], prefix: str, mode: str
) -> None:
    with down(own_nodes, (0, 4), mode):
        clients = [n.client(asyncio=True, socket_timeout=2) for n in own_nodes]
        lock = AsyncRedlock(clients, prefix, ttl=5, node_timeout=NODE_TIMEOUT, retries=0)
        assert await lock.acquire()
        assert _keys_left(own_nodes, [1, 2, 3], lock.key) == 3
        await lock.release()
        assert _keys_left(own_nodes, [1, 2, 3], lock.key) == 0
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize("mode", ["kill", "stop"])
def test_fails_with_three_down_and_leaves_nothing(
    own_nodes: list[EmbeddedServer], prefix: str, mode: str
) -> None:
    retries, retry_delay = 2, 0.05
    with down(own_nodes, (0, 2, 3), mode):
        lock = Redlock(
            _clients(own_nodes),
            prefix,
            ttl=5,
            node_timeout=NODE_TIMEOUT,
            retries=retries,
            retry_delay=retry_delay,
        )
        started = time.monotonic()
        assert lock.acquire() is False
        elapsed = time.monotonic() - started
        assert _keys_left(own_nodes, [1, 4], lock.key) == 0
    # Bounded even when servers hang: (acquire fan-out + clean-up fan-out) per attempt, plus
    # the waits between attempts; generous slack for a loaded machine.
    bound = (retries + 1) * (2 * NODE_TIMEOUT + retry_delay)
    assert elapsed < bound + 5


def test_quorum_matrix(
    own_nodes: list[EmbeddedServer], prefix: str, scale: Callable[[int, int], int]
) -> None:
    subsets = [s for k in range(6) for s in itertools.combinations(range(5), k)]  # all 32
    random.Random(7).shuffle(subsets)
    for number, which in enumerate(subsets[: scale(4, 32)]):
        mode = "kill" if number % 2 else "stop"
        name = f"{prefix}:{number}"
        with down(own_nodes, which, mode):
            first = Redlock(_clients(own_nodes), name, ttl=5, node_timeout=NODE_TIMEOUT, retries=0)
            second = Redlock(_clients(own_nodes), name, ttl=5, node_timeout=NODE_TIMEOUT, retries=0)
            got = [first.acquire(), second.acquire()]
            up = [i for i in range(5) if i not in which]
            assert got[0] == (len(up) >= 3), (which, mode)
            assert got[1] is False  # never two holders
            if got[0]:
                first.release()
            assert _keys_left(own_nodes, up, first.key) == 0


def test_validity_shrinks_by_acquisition_time(own_nodes: list[EmbeddedServer], prefix: str) -> None:
    ttl = 5.0
    with down(own_nodes, (2,), "stop"):  # the fan-out waits node_timeout for the hung one
        lock = Redlock(_clients(own_nodes), prefix, ttl=ttl, node_timeout=NODE_TIMEOUT, retries=0)
        assert lock.acquire()
        assert lock.validity is not None
        assert 0 < lock.validity <= ttl - NODE_TIMEOUT - ttl * 0.01
        lock.release()
    fast = Redlock(_clients(own_nodes), prefix, ttl=ttl, node_timeout=NODE_TIMEOUT, retries=0)
    assert fast.acquire()
    assert fast.validity is not None
    assert fast.validity > ttl - NODE_TIMEOUT - ttl * 0.01
    fast.release()


def _contend(ports: list[int], name: str, rounds: int) -> int:
    clients = [
        redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0)) for port in ports
    ]
    counter_key = f"{name}:n"
    done = 0
    while done < rounds:
        lock = Redlock(clients, name, ttl=10, retries=0, node_timeout=0.5)
        if not lock.acquire():
            time.sleep(random.uniform(0.001, 0.02))
            continue
        value = int(clients[0].get(counter_key) or 0)  # racy on purpose: the lock protects it
        clients[0].set(counter_key, value + 1)
        lock.release()
        done += 1
    return done


def test_processes_never_overlap(
    redlock_nodes: list[EmbeddedServer], prefix: str, scale: Callable[[int, int], int]
) -> None:
    procs, rounds = scale(4, 16), scale(15, 60)
    ports = [node.port or 0 for node in redlock_nodes]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(procs, mp_context=spawn) as pool:
        futures = [pool.submit(_contend, ports, prefix, rounds) for _ in range(procs)]
        done = sum(f.result(timeout=600) for f in futures)
    assert done == procs * rounds
    with redlock_nodes[0].client() as client:
        assert int(client.get(f"{prefix}:n") or 0) == procs * rounds  # no lost update


def _contend_under_faults(
    ports: list[int], counter_port: int, name: str, rounds: int
) -> tuple[int, int, int]:
    """Critical sections on a counter of a separate server; returns (done, attempts, not_owned)."""
    clients = [
        redis.Redis(port=p, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        for p in ports
    ]
    counter = redis.Redis(port=counter_port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    done = attempts = not_owned = 0
    while done < rounds and attempts < rounds * 200:
        attempts += 1
        lock = Redlock(clients, name, ttl=2, retries=0, node_timeout=0.2)
        if not lock.acquire():
            time.sleep(random.uniform(0.005, 0.05))
            continue
        value = int(counter.get(f"{name}:n") or 0)  # racy on purpose: the lock protects it
        counter.set(f"{name}:n", value + 1)
        done += 1
        try:
            lock.release()
        except LockNotOwnedError:
            not_owned += 1  # our token was on servers that died meanwhile: fine, it expires
    return done, attempts, not_owned


def test_minority_faults_during_contention(
    own_nodes: list[EmbeddedServer],
    redlock_nodes: list[EmbeddedServer],
    prefix: str,
    scale: Callable[[int, int], int],
) -> None:
    # Scenario 7: two random servers are killed every cycle and restarted (empty) only after
    # the max TTL, as the spec's delayed restart requires; processes keep contending.
    procs, rounds = scale(3, 6), scale(20, 200)
    ports = [node.port or 0 for node in own_nodes]
    stop = threading.Event()
    kills = 0

    def nemesis() -> None:
        nonlocal kills
        rng = random.Random(11)
        while not stop.is_set():
            victims = rng.sample(range(5), 2)
            for i in victims:
                own_nodes[i].kill()
            kills += 2
            stop.wait(2.1)  # >= max TTL (2 s) before they come back without their data
            for i in victims:
                own_nodes[i].start()
            stop.wait(0.5)

    thread = threading.Thread(target=nemesis)
    thread.start()
    try:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(procs, mp_context=spawn) as pool:
            counter_port = redlock_nodes[0].port or 0
            futures = [
                pool.submit(_contend_under_faults, ports, counter_port, prefix, rounds)
                for _ in range(procs)
            ]
            results = [f.result(timeout=600) for f in futures]
    finally:
        stop.set()
        thread.join(30)
        for node in own_nodes:
            if not node.running:
                node.start()
    done = sum(r[0] for r in results)
    assert kills >= 2
    assert done == procs * rounds
    with redlock_nodes[0].client() as client:
        assert int(client.get(f"{prefix}:n") or 0) == done  # no overlapping critical sections


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="scenario 8 without restart_guard (the default): a server restarted empty at once "
    "votes again, so a second holder gets a majority; documented in docs/locks.md",
)
def test_restart_without_persistence_gives_a_second_holder(
    own_nodes: list[EmbeddedServer], prefix: str
) -> None:
    clients = _clients(own_nodes)
    blockers = [clients[i].set(f"{{lock:{prefix}}}", "other", px=60_000) for i in (3, 4)]
    assert all(blockers)
    a = Redlock(clients, prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    assert a.acquire()  # on servers 0, 1, 2
    for i in (3, 4):
        clients[i].delete(a.key)
    own_nodes[2].restart(wipe=True)  # server 2 forgets A's key
    _wait_up(own_nodes[2])
    b = Redlock(_clients(own_nodes), prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    try:
        assert not b.acquire(), "two holders at once"
    finally:
        for client in _clients(own_nodes):
            client.delete(a.key)


def test_restart_guard_denies_the_wiped_server_a_vote(
    own_nodes: list[EmbeddedServer], prefix: str
) -> None:
    # Scenario 8 with the guard: the restarted-empty server abstains until every lease it may
    # have forgotten has expired, so B cannot reach a majority while A holds.
    ttl = 1.0
    clients = _clients(own_nodes)
    for client in clients:
        client.set(EPOCH_KEY, 0)  # provisioned long ago
    options: dict[str, Any] = {"ttl": ttl, "node_timeout": 0.15, "retries": 0}
    for i in (3, 4):
        clients[i].set(f"{{lock:{prefix}}}", "other", px=60_000)
    a = Redlock(clients, prefix, restart_guard=ttl, **options)
    assert a.acquire()  # on servers 0, 1, 2
    for i in (3, 4):
        clients[i].delete(a.key)
    own_nodes[2].restart(wipe=True)
    _wait_up(own_nodes[2])
    b = Redlock(_clients(own_nodes), prefix, restart_guard=ttl, **options)
    assert b.acquire() is False  # server 2 abstains: only 3 and 4 would vote
    time.sleep(ttl + 0.2)  # A's lease and server 2's guard have both run out
    assert b.acquire()
    b.release()


def test_restart_guard_unprovisioned_servers_abstain_at_first(
    own_nodes: list[EmbeddedServer], prefix: str
) -> None:
    clients = _clients(own_nodes)
    for client in clients:
        client.delete(EPOCH_KEY)
    lock = Redlock(clients, prefix, ttl=1, node_timeout=0.15, retries=0, restart_guard=1)
    assert lock.acquire() is False  # no server can vouch for its past yet
    assert _keys_left(own_nodes, list(range(5)), lock.key) == 0
    time.sleep(1.2)
    assert lock.acquire()
    lock.release()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="scenario 9: Redlock assumes servers' clocks advance at the same rate; a jump that "
    "expires A's key on one server lets B take a majority while A still holds (Kleppmann)",
)
def test_clock_jump_on_one_server_gives_a_second_holder(
    own_nodes: list[EmbeddedServer], prefix: str
) -> None:
    clients = _clients(own_nodes)
    for i in (3, 4):
        clients[i].set(f"{{lock:{prefix}}}", "other", px=60_000)
    a = Redlock(clients, prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    assert a.acquire()  # on servers 0, 1, 2
    for i in (3, 4):
        clients[i].delete(a.key)
    clients[2].pexpire(a.key, 1)  # server 2's clock jumps forward: its copy expires now
    time.sleep(0.05)
    b = Redlock(clients, prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    try:
        assert not b.acquire(), "two holders at once"
    finally:
        for client in clients:
            client.delete(a.key)


def test_clock_jump_stale_write_still_rejected_by_a_fenced_resource(
    own_nodes: list[EmbeddedServer], redlock_nodes: list[EmbeddedServer], prefix: str
) -> None:
    # The scenario-9 overlap is real, but a resource guarded by fences from a single-server
    # Lock (taken inside the Redlock critical section) still refuses the older holder.
    clients = _clients(own_nodes)
    fence_server = redlock_nodes[0].client()
    _opened.append(fence_server)
    store = FencedStore(fence_server, prefix)
    for i in (3, 4):
        clients[i].set(f"{{lock:{prefix}}}", "other", px=60_000)
    a = Redlock(clients, prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    assert a.acquire()
    a_fence_lock = Lock(fence_server, prefix, ttl=0.2)
    assert a_fence_lock.acquire()
    a_fence = a_fence_lock.fence
    for i in (3, 4):
        clients[i].delete(a.key)
    clients[2].pexpire(a.key, 1)
    time.sleep(0.3)  # A's short fencing lease lapses too (A is "paused")
    b = Redlock(clients, prefix, ttl=30, node_timeout=NODE_TIMEOUT, retries=0)
    assert b.acquire()  # the overlap
    b_fence_lock = Lock(fence_server, prefix, ttl=5)
    assert b_fence_lock.acquire(timeout=10)
    assert b_fence_lock.fence is not None
    assert a_fence is not None
    store.write(b_fence_lock.fence, "v", "B")
    with pytest.raises(StaleFenceError):  # 0 stale writes accepted
        store.write(a_fence, "v", "A")
    assert store.read("v") == b"B"
    b_fence_lock.release()
    for client in clients:
        client.delete(a.key)


async def test_async_three_paused_fails_within_timeout(
    own_nodes: list[EmbeddedServer], prefix: str
) -> None:
    with down(own_nodes, (1, 2, 4), "stop"):
        clients: list[Any] = [n.client(asyncio=True, socket_timeout=2) for n in own_nodes]
        lock = AsyncRedlock(clients, prefix, ttl=5, node_timeout=NODE_TIMEOUT, retries=1)
        assert await asyncio.wait_for(lock.acquire(), 30) is False
        assert _keys_left(own_nodes, [0, 3], lock.key) == 0
        for client in clients:
            await client.aclose()
