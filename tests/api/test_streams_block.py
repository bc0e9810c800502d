"""An idle worker's blocking read always ends before the client's socket timeout."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    EmbeddedCluster,
    EmbeddedServer,
    RedisPatternsWarning,
    StreamQueue,
    Worker,
)


def test_block_stays_under_the_clients_socket_timeout(valkey_server: EmbeddedServer) -> None:
    assert valkey_server.port is not None

    def block_ms(**options: object) -> int:
        options.setdefault(
            "retry", Retry(NoBackoff(), 0)
        )  # no re-sending: the clients differ in timeouts only
        client = redis.Redis(host="127.0.0.1", port=valkey_server.port, **options)  # type: ignore[arg-type]
        return Worker(StreamQueue(client, "q"), "c", print, block=5.0)._core.block_ms

    assert block_ms(socket_timeout=0.5) == 400
    with pytest.warns(RedisPatternsWarning, match="no socket_timeout"):
        assert block_ms(socket_timeout=None) == 5000  # no timeout: block as asked
    assert block_ms(socket_timeout=60) == 5000
    assert block_ms() == int(
        redis.Redis().connection_pool.connection_kwargs["socket_timeout"] * 800
    )
    from_url = redis.Redis.from_url(valkey_server.url)  # no kwarg: the connection default (5 s)
    assert Worker(StreamQueue(from_url, "q"), "c", print, block=5.0)._core.block_ms == 4000


def test_idle_worker_never_times_out_its_read(
    valkey_server: EmbeddedServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert valkey_server.port is not None
    # No re-sending, so a read that timed out cannot hide behind a retry; 1.5 s leaves the
    # capped read (1.2 s) a 300 ms margin on a loaded machine.
    client = redis.Redis(
        host="127.0.0.1", port=valkey_server.port, socket_timeout=1.5, retry=Retry(NoBackoff(), 0)
    )
    queue = StreamQueue(client, f"{prefix}:q")
    worker = Worker(queue, "c1", lambda message: None, block=5.0)
    thread = threading.Thread(target=worker.run)
    with caplog.at_level(logging.WARNING, logger="redis_patterns"):
        thread.start()
        time.sleep(3.0)  # two or three idle reads
        worker.stop()
        thread.join(timeout=10)
    client.close()
    assert not thread.is_alive()
    assert [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()] == []


def test_block_on_a_cluster_client_uses_the_connection_default(cluster: EmbeddedCluster) -> None:
    # Given no socket_timeout, RedisCluster keeps none: its connections default to 5 s.
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.startup_nodes]
    client = redis.cluster.RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0))
    assert Worker(StreamQueue(client, "q"), "c", print, block=5.0)._core.block_ms == 4000
    client.close()
    embedded = cluster.client()  # connect()'s timeout
    assert Worker(StreamQueue(embedded, "q"), "c", print, block=5.0)._core.block_ms == 2400
    embedded.close()
