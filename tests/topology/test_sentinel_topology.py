"""The Sentinel fixture: a primary, 2 replicas in sync and 3 Sentinels that know each other from
the start; a graceful failover and a killed primary, each followed by the other replica; on
Valkey and on Redis 7."""

from __future__ import annotations

from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import ConfigurationError, EmbeddedServer
from redis_patterns.testing import SentinelTopology

pytestmark = pytest.mark.fault


def _replication(server: EmbeddedServer) -> dict[str, Any]:
    with server.client(socket_timeout=2.0) as client:
        return dict(client.info("replication"))


def _follows(replica: EmbeddedServer, primary: EmbeddedServer) -> bool:
    info = _replication(replica)
    return bool(
        info["role"] == "slave"
        and info["master_port"] == primary.port
        and info["master_link_status"] == "up"
    )


def _write_everywhere(sentinel: SentinelTopology, key: str, value: str) -> None:
    with sentinel.current_primary().client(socket_timeout=5.0) as primary:
        primary.set(key, value)
        assert primary.execute_command("WAIT", 2, 5000) == 2


def test_topology_is_formed_and_fails_over_gracefully(
    sentinel: SentinelTopology, prefix: str
) -> None:
    primary = sentinel.primary
    assert len(sentinel.replicas) == 2
    assert len(sentinel.sentinels) == 3
    assert all(_follows(replica, primary) for replica in sentinel.replicas)
    ids = {s.myid for s in sentinel.sentinels}
    for index, watcher in enumerate(sentinel.sentinels):
        assert sentinel.primary_address(index) == ("127.0.0.1", primary.port)
        with watcher.client(socket_timeout=2.0) as client:
            others = client.execute_command("SENTINEL", "SENTINELS", sentinel.service)
            replicas = client.execute_command("SENTINEL", "REPLICAS", sentinel.service)
        seen = {_field(entry, "runid") for entry in others}
        assert seen == ids - {watcher.myid}  # told up front, not discovered 2 s later
        assert {int(_field(e, "port")) for e in replicas} == {r.port for r in sentinel.replicas}
    key = f"{prefix}:k"
    _write_everywhere(sentinel, key, "before")

    promotion = sentinel.failover_promotion()  # SENTINEL FAILOVER

    assert promotion.old is primary
    assert promotion.new in sentinel.replicas
    (other,) = [r for r in sentinel.replicas if r is not promotion.new]
    assert _follows(other, promotion.new)  # the other replica was reconfigured
    assert all(sentinel.primary_address(i) == promotion.address for i in range(3))
    assert 0 < promotion.promoted_after <= promotion.settled_after
    manager = sentinel.client()
    client = manager.master_for(sentinel.service, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    assert client.get(key) == b"before"
    assert client.set(key, "after")
    with promotion.new.client() as direct:
        assert direct.get(key) == b"after"
    client.close()
    for connection in manager.sentinels:
        connection.close()


def test_killed_primary_is_replaced_and_restarts_as_a_replica(
    sentinel: SentinelTopology, prefix: str
) -> None:
    key = f"{prefix}:k"
    _write_everywhere(sentinel, key, "kept")
    old = sentinel.primary

    promotion = sentinel.kill_primary()  # SIGKILL; Sentinels see it down after 1 s, vote

    assert promotion.old is old
    assert not old.running
    assert promotion.new in sentinel.replicas
    # down-after is 1 s, then the quorum, the leader election and the promotion
    assert 1.0 <= promotion.promoted_after <= promotion.settled_after
    (other,) = [r for r in sentinel.replicas if r is not promotion.new]
    assert _follows(other, promotion.new)
    with promotion.new.client() as direct:
        assert direct.get(key) == b"kept"

    sentinel.restart_as_replica(old)

    # On a loaded machine the Sentinels (down-after 1 s) may fail over once more while the old
    # primary restarts; what must hold is that it rejoined as a replica of the primary they name.
    primary = sentinel.current_primary()
    assert primary in (promotion.new, other)
    assert _follows(old, primary)
    with old.client() as direct:
        assert direct.get(key) == b"kept"  # synced from the new primary


def test_topology_refuses_a_primary_without_replicas() -> None:
    with pytest.raises(ConfigurationError):
        SentinelTopology(replicas=0)
    with pytest.raises(ConfigurationError):
        SentinelTopology(replicas=True)


def _field(entry: Any, name: str) -> str:
    """One field of a ``SENTINEL SENTINELS`` / ``REPLICAS`` entry (a flat list or a dict)."""
    if isinstance(entry, dict):
        value = entry.get(name, entry.get(name.encode()))
    else:
        items = list(entry)
        value = items[items.index(name.encode()) + 1]
    return value.decode() if isinstance(value, bytes) else str(value)
