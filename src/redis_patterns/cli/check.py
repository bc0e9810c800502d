"""``redis-patterns check``: audit a deployment for what these patterns need from the server."""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

import redis

__all__ = ["Finding", "audit", "run_check"]

Severity = Literal["ok", "info", "warning", "error"]
_RANK: dict[str, int] = {"ok": 0, "info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One audited property: what was found and what it means for the patterns."""

    check: str
    severity: Severity
    found: str
    advice: str = ""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def _server(info: dict[str, Any]) -> list[Finding]:
    name = str(info.get("server_name") or "redis")
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    compat = _version_tuple(str(info.get("redis_version", "0")))
    found = f"{name} {version}"
    if name == "valkey" and _version_tuple(version) < (7, 2):
        return [Finding("server", "error", found, "Valkey >= 7.2 is required")]
    if name != "valkey" and compat < (6, 2):
        return [Finding("server", "error", found, "Redis >= 6.2 is required (ZADD GT, XAUTOCLAIM)")]
    if compat < (7, 0):
        return [
            Finding(
                "server",
                "warning",
                found,
                "Redis 6.2 works, but XAUTOCLAIM does not report deleted entries and Functions "
                "are missing; 7.0 or later is recommended",
            )
        ]
    return [Finding("server", "ok", found, "ZADD GT, XAUTOCLAIM with deleted ids, Functions")]


def _eviction(info: dict[str, Any]) -> list[Finding]:
    policy = str(info.get("maxmemory_policy", "unknown"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if policy == "noeviction":
        return [
            Finding(
                "eviction",
                "ok",
                f"maxmemory-policy noeviction (maxmemory {maxmemory or 'unlimited'})",
                "safe for locks, sessions and streams; run caches on an instance with an "
                "allkeys-lru or allkeys-lfu policy",
            )
        ]
    return [
        Finding(
            "eviction",
            "warning",
            f"maxmemory-policy {policy} (maxmemory {maxmemory or 'unlimited'})",
            "the server may evict lock keys, fencing counters, sessions and stream entries under "
            "memory pressure; keep those on a noeviction instance (this policy suits caches)",
        )
    ]


def _persistence(info: dict[str, Any], client: redis.Redis) -> list[Finding]:
    aof = str(info.get("aof_enabled", "0")) == "1"
    try:
        config = client.config_get("appendfsync")
        fsync = str(config.get("appendfsync", "unknown"))
    except redis.RedisError:
        fsync = "unknown"
    if not aof:
        return [
            Finding(
                "persistence",
                "warning",
                "append-only file off",
                "a restart loses every lock, fencing counter and write-behind entry written "
                "since the last snapshot; fences may repeat. Enable appendonly for those patterns",
            )
        ]
    if fsync == "always":
        return [Finding("persistence", "ok", "AOF, appendfsync always", "no acknowledged loss")]
    return [
        Finding(
            "persistence",
            "info",
            f"AOF, appendfsync {fsync}",
            "a crash can lose up to about a second of acknowledged writes (fences, write-behind)",
        )
    ]


def _topology(info: dict[str, Any], client: redis.Redis) -> list[Finding]:
    role = str(info.get("role", "master"))
    replicas = int(info.get("connected_slaves", 0) or 0)
    cluster = str(info.get("cluster_enabled", "0")) == "1"
    found = f"{'cluster node' if cluster else 'standalone'}, role {role}, {replicas} replica(s)"
    advice = "every pattern's keys share a hash tag, so each operation stays on one node"
    findings = [Finding("topology", "info", found, advice)]
    if replicas and role == "master":
        findings += _replication(client, cluster)
    return findings


def _replication(client: redis.Redis, cluster: bool) -> list[Finding]:
    """A primary with replicas: how much a failover can lose (docs/cluster.md's table)."""
    try:
        config = client.config_get("min-replicas-*")
        minimum = int(config.get("min-replicas-to-write", 0) or 0)
        lag = int(config.get("min-replicas-max-lag", 0) or 0)
    except (redis.RedisError, ValueError):
        return []
    per_write = "Lock, SessionStore and WriteBehind take wait_replicas=1 for writes that matter"
    if minimum:
        found = f"min-replicas-to-write {minimum}, min-replicas-max-lag {lag}"
        return [Finding("replication", "ok", found, per_write)]
    follow = (
        ""
        if cluster
        else "; connect through redis_patterns.sentinel_client, which follows a "
        "failover within 0.5 s (redis-py's Sentinel client writes on until the old primary's "
        "demotion, 8-10 s)"
    )
    return [
        Finding(
            "replication",
            "warning",
            "replicas, but min-replicas-to-write 0",
            "a failover can lose acknowledged writes (replication is asynchronous); set "
            "min-replicas-to-write 1 (and min-replicas-max-lag 10 or less) so that an old "
            "primary refuses writes once its replicas have left it" + follow + "; " + per_write,
        )
    ]


def _latency(client: redis.Redis) -> list[Finding]:
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    median = statistics.median(samples)
    severity: Severity = "ok" if median < 5 else "warning"
    advice = "" if severity == "ok" else "lock TTLs and limiter windows should be far above this"
    return [Finding("latency", severity, f"round trip median {median:.2f} ms", advice)]


def _scripts(client: redis.Redis) -> list[Finding]:
    folder = resources.files("redis_patterns").joinpath("lua")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua"))
    failed = []
    for name in names:
        try:
            client.script_load(folder.joinpath(name).read_text("utf-8"))
        except redis.RedisError as exc:
            failed.append(f"{name}: {exc}")
    if failed:
        return [Finding("scripts", "error", f"{len(failed)} script(s) refused", "; ".join(failed))]
    return [Finding("scripts", "ok", f"all {len(names)} package scripts load", "")]


def audit(client: redis.Redis) -> list[Finding]:
    """Audit the server behind ``client``; never raises for an unreachable server."""
    try:
        info: dict[str, Any] = client.info()
    except redis.RedisError as exc:
        return [Finding("connection", "error", f"cannot reach the server: {exc}", "")]
    findings = [Finding("connection", "ok", "PING answered", "")]
    findings += _server(info)
    findings += _eviction(info)
    findings += _persistence(info, client)
    findings += _topology(info, client)
    findings += _latency(client)
    findings += _scripts(client)
    return findings


def _print(findings: list[Finding]) -> None:
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            colours = {"ok": "green", "info": "cyan", "warning": "yellow", "error": "red"}
            table = Table(title="redis-patterns check")
            for column in ("check", "severity", "found", "advice"):
                table.add_column(column)
            for f in findings:
                severity = f"[{colours[f.severity]}]{f.severity}[/]"
                table.add_row(f.check, severity, f.found, f.advice)
            Console().print(table)
            return
    for f in findings:
        print(f"{f.severity.upper():8} {f.check:12} {f.found}")
        if f.advice:
            print(f"{'':22}{f.advice}")


def run_check(*, url: str, as_json: bool, timeout: float = 5.0) -> int:
    """Print the audit of ``url``; the exit status is 0 (ok/info), 1 (warning) or 2 (error)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        findings = audit(client)
    finally:
        client.close()
    if as_json:
        print(json.dumps({"url": url, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        _print(findings)
    return max(_RANK[f.severity] for f in findings)
