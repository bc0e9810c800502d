"""The replicated cluster fixture: built in sync, failed over both ways, a master killed and
brought back, slots moved under load; on Valkey and on Redis 7."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from redis_patterns import (
    BoundedCounter,
    ConfigurationError,
    EmbeddedCluster,
    EmbeddedServer,
    EmbeddedServerError,
)

pytestmark = pytest.mark.fault


def _client(cluster: EmbeddedCluster) -> Any:
    return cluster.client(retry=Retry(NoBackoff(), 0), socket_timeout=2.0)


def _replication(server: EmbeddedServer) -> dict[str, Any]:
    with server.client(socket_timeout=2.0) as client:
        return dict(client.info("replication"))


def _replicates(replica: EmbeddedServer, master: EmbeddedServer) -> bool:
    info = _replication(replica)
    return bool(info["role"] == "slave" and info["master_port"] == master.port)


def _key_on(cluster: EmbeddedCluster, master: EmbeddedServer, stem: str) -> str:
    for index in range(100_000):
        key = f"{{{stem}-{index}}}"
        if cluster.master_of(key) is master:
            return key
    raise AssertionError("no key found")


def test_replicated_cluster_is_formed_and_fails_over_both_ways(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated_cluster
    masters = cluster.masters()
    assert len(masters) == 3
    assert len(cluster.nodes) == 6
    pairs = {master.port: [r.port for r in cluster.replicas_of(master)] for master in masters}
    assert all(len(replicas) == 1 for replicas in pairs.values())
    for master in masters:
        (replica,) = cluster.replicas_of(master)
        info = _replication(replica)
        assert info["master_link_status"] == "up"  # first sync done: it can be promoted
        assert _replicates(replica, master)
    client = _client(cluster)
    assert len(client.get_primaries()) == 3
    key = f"{{{prefix}}}:k"
    assert client.set(key, "before")
    old = cluster.master_of(key)
    (replica,) = cluster.replicas_of(old)
    with old.client() as direct:
        assert direct.execute_command("WAIT", 1, 5000) == 1

    promotion = cluster.failover(old)  # CLUSTER FAILOVER on the replica

    assert (promotion.old, promotion.new) == (old, replica)
    assert cluster.master_of(key) is replica
    assert _replicates(old, replica)  # the old master follows its successor
    assert 0 <= promotion.promoted_after <= promotion.settled_after
    assert client.get(key) == b"before"  # MOVED from the old master, followed by redis-py
    assert client.set(key, "after")

    back = cluster.failover(replica)  # and back again

    assert (back.old, back.new) == (replica, old)
    assert cluster.master_of(key) is old
    assert _replicates(replica, old)
    assert client.get(key) == b"after"
    client.close()


def test_killed_master_is_replaced_and_rejoins_as_a_replica(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated_cluster
    client = _client(cluster)
    key = f"{{{prefix}}}:k"
    client.set(key, "kept")
    old = cluster.master_of(key)
    (replica,) = cluster.replicas_of(old)
    with old.client() as direct:
        assert direct.execute_command("WAIT", 1, 5000) == 1
    pid = old.pid

    promotion = cluster.kill_master(old)  # SIGKILL; the replica wins the election

    assert pid is not None
    assert not old.running
    assert (promotion.old, promotion.new) == (old, replica)
    # cluster-node-timeout is 1 s: failure detection, then the replica's election delay
    assert 1.0 <= promotion.promoted_after <= promotion.settled_after
    assert cluster.master_of(key) is replica
    # A client that never re-sends fails once on the dead master, refreshing its map ...
    with pytest.raises(redis.ConnectionError):
        client.get(key)
    assert client.get(key) == b"kept"  # ... and the next call goes to the promoted replica

    cluster.restart_node(old)  # same port, same nodes.conf: it learns it was replaced

    assert _replicates(old, replica)
    assert _replication(old)["master_link_status"] == "up"
    assert [r.port for r in cluster.replicas_of(replica)] == [old.port]
    assert len(cluster.masters()) == 3
    assert client.get(key) == b"kept"
    client.close()


def test_slots_move_under_load_with_no_error(
    replicated_cluster: EmbeddedCluster, prefix: str
) -> None:
    """redis-py absorbs MOVED and ASK: writers see no error while 16 slots change masters."""
    cluster = replicated_cluster
    source, target = cluster.masters()[:2]
    anchor = key_slot(_key_on(cluster, source, prefix).encode())
    first, last = anchor, anchor + 15
    assert all(cluster.master_of(slot) is source for slot in range(first, last + 1))
    keys = []  # hash-tagged: each key's ":plain" and ":filler" keys share its slot
    for index in range(100_000):
        key = f"{{{prefix}:{index}}}"
        if first <= key_slot(key.encode()) <= last:
            keys.append(key)
        if len(keys) == 48:
            break
    loader = _client(cluster)
    for key in keys:
        for n in range(4):  # work for MIGRATE while the writers run
            loader.set(f"{key}:filler{n}", "x" * 100)
    counts = dict.fromkeys(keys, 0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(mine: list[str]) -> None:
        client = _client(cluster)
        counters = {key: BoundedCounter(client, key, 10**9) for key in mine}
        while not stop.is_set():
            for key in mine:
                try:
                    counters[key].incr()  # one EVALSHA, absorbed through MOVED/ASK
                    client.incr(f"{key}:plain")  # a plain command, too
                except Exception as exc:  # any error at all fails the test
                    errors.append(exc)
                    return
                counts[key] += 1
        client.close()

    threads = [threading.Thread(target=write, args=(keys[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        moved = cluster.move_slots(first, last, target, batch=10, pause=0.002)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert moved >= 4 * len(keys)  # at least the fillers moved
    assert all(cluster.master_of(slot) is target for slot in range(first, last + 1))
    assert all(count > 0 for count in counts.values())
    for key, count in counts.items():  # every acknowledged write is there, once
        assert int(loader.get(f"{key}:plain") or 0) == count
        assert BoundedCounter(loader, key, 10**9).value() == count
    loader.close()


def test_fault_helpers_refuse_what_cannot_work(cluster: EmbeddedCluster) -> None:
    # Before any I/O:
    with pytest.raises(ConfigurationError):
        EmbeddedCluster(3, replicas=-1)
    with pytest.raises(ConfigurationError):
        EmbeddedCluster(3, replicas=True)
    master = cluster.masters()[0]
    with pytest.raises(ConfigurationError):
        cluster.move_slots(10, 5, master)
    with pytest.raises(ConfigurationError):
        cluster.master_of(16384)
    # The session cluster has no replicas: nothing can take over.
    with pytest.raises(EmbeddedServerError, match="no running replica"):
        cluster.failover(master)
    with pytest.raises(EmbeddedServerError, match="no running replica"):
        cluster.kill_master(master)
    assert master.running
