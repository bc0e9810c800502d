"""``redis-patterns check`` against real servers configured in different ways."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

from redis_patterns import EmbeddedServer

CLI = [sys.executable, "-m", "redis_patterns.cli", "check"]


def check(url: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = subprocess.run(
        [*CLI, "--url", url, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    report = json.loads(result.stdout)
    return result.returncode, {f["check"]: f for f in report["findings"]}


def test_embedded_server_as_started_warns_only_about_persistence(
    valkey_server: EmbeddedServer,
) -> None:
    code, findings = check(valkey_server.url)
    assert findings["connection"]["severity"] == "ok"
    assert findings["server"]["severity"] == "ok"
    assert findings["server"]["found"].startswith("valkey 9.")
    assert findings["eviction"]["severity"] == "ok"
    assert findings["persistence"]["severity"] == "warning"
    assert findings["scripts"]["severity"] == "ok"
    assert code == 1


def test_lru_policy_is_flagged_for_locks_and_streams() -> None:
    config = {"maxmemory-policy": "allkeys-lru", "maxmemory": "64mb", "appendonly": "yes"}
    with EmbeddedServer(config=config, appendfsync="always") as server:
        code, findings = check(server.url)
    assert findings["eviction"]["severity"] == "warning"
    assert "allkeys-lru" in findings["eviction"]["found"]
    assert findings["persistence"]["severity"] == "ok"
    assert code == 1


def test_aof_everysec_with_noeviction_is_clean() -> None:
    with EmbeddedServer(appendonly=True) as server:
        code, findings = check(server.url)
    assert findings["persistence"]["severity"] == "info"
    assert "everysec" in findings["persistence"]["found"]
    assert code == 0


def test_unreachable_server_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        code, findings = check(f"redis://127.0.0.1:{port}")
    assert code == 2
    assert findings["connection"]["severity"] == "error"
    assert list(findings) == ["connection"]


def test_redis7_reports_its_version(redis7_server: EmbeddedServer) -> None:
    _, findings = check(redis7_server.url)
    assert findings["server"]["found"].startswith("redis 7.0")
    assert findings["server"]["severity"] == "ok"


def test_plain_output_when_not_a_terminal(valkey_server: EmbeddedServer) -> None:
    result = subprocess.run(
        [*CLI, "--url", valkey_server.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert "WARNING  persistence" in result.stdout
    assert "\x1b[" not in result.stdout


def test_replicas_without_min_replicas_to_write_are_flagged() -> None:
    with (
        EmbeddedServer(config={"repl-diskless-sync-delay": 0}) as primary,
        EmbeddedServer(config={"replicaof": f"127.0.0.1 {primary.port}"}),
        primary.client() as client,
    ):
        assert client.wait(1, 10_000) == 1
        code, findings = check(primary.url)
        assert findings["replication"]["severity"] == "warning"
        assert "min-replicas-to-write 1" in findings["replication"]["advice"]
        assert "sentinel_client" in findings["replication"]["advice"]
        assert code == 1
        client.config_set("min-replicas-to-write", 1)
        _, findings = check(primary.url)
        assert findings["replication"]["severity"] == "ok"
        assert "wait_replicas" in findings["replication"]["advice"]


def test_no_replication_finding_without_replicas(valkey_server: EmbeddedServer) -> None:
    _, findings = check(valkey_server.url)
    assert "replication" not in findings
