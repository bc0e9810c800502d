"""The benchmark harness, run as `make bench-peers` runs it: its report's shape and exact counts.

Timings are never asserted; what the harness states exactly (commands and round trips per
operation, request bytes, the admission probe) is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {
    "name", "kind", "status", "note", "ratio", "ratio_lo", "ratio_hi", "wall_us", "client_us",
    "server_us", "server_cpu_us", "bytes", "commands", "round_trips", "client_bytes", "names",
    "inside", "throughput", "ops_per_read", "probe", "correct",
}  # fmt: skip


def _harness(out: Path, groups: str, only: list[str], scans: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.run", "--quick", "--no-pin",
        "--groups", groups, "--only", ",".join(only), "--scans", scans,
        "--json", str(out / "report.json"), "--markdown", str(out / "report.md"),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    data["markdown"] = (out / "report.md").read_text()
    return data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    only = [
        "redis-patterns Lock",
        "redis-patterns TokenBucket",
        "redis-patterns AsyncCache.get",
        "redis-patterns AsyncCache.get without batching",
        "redis.asyncio pipeline of 100 GETs",
    ]
    return _harness(tmp_path_factory.mktemp("harness"), "lock,limiter,ccache", only, "limiter-cost")


@pytest.fixture(scope="module")
def cluster_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    only = [
        "redis-patterns FixedWindow",
        "redis-patterns FixedWindow without batching",
        "raw pipelines per master (100 GETs)",
    ]
    return _harness(tmp_path_factory.mktemp("cluster"), "ccluster", only, "")


def _rows(report: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    (found,) = [g for g in report["groups"] if g["key"] == group]
    return {row["name"]: row for row in found["rows"]}


def test_every_row_has_every_column_and_the_baseline_is_one(report: dict[str, Any]) -> None:
    assert [g["key"] for g in report["groups"]] == ["lock", "limiter", "ccache"]
    for group in report["groups"]:
        for row in group["rows"]:
            assert set(row) == ROW_KEYS
            assert row["status"] == "ok", row
            # measured, never asserted: only that every column was filled
            for column in ("ratio", "wall_us", "client_us", "server_us", "server_cpu_us"):
                assert isinstance(row[column], float), (row["name"], column)
        assert _rows(report, group["key"])[group["baseline"]]["ratio"] == 1.0
    assert report["meta"]["pinning"] == "not pinned (pinning off)"
    assert report["meta"]["rounds"] == 3


def test_lock_cycle_is_two_commands_in_two_round_trips(report: dict[str, Any]) -> None:
    lock = _rows(report, "lock")["redis-patterns Lock"]
    assert (lock["commands"], lock["round_trips"]) == (2, 2)
    assert "EVALSHA" in lock["names"].split()
    assert lock["correct"] is True
    assert lock["probe"] == "400 / 400 increments"


def test_token_bucket_hit_is_one_evalsha_and_admits_exactly_the_limit(
    report: dict[str, Any],
) -> None:
    bucket = _rows(report, "limiter")["redis-patterns TokenBucket"]
    assert (bucket["commands"], bucket["round_trips"], bucket["names"]) == (1, 1, "EVALSHA")
    assert "TIME" in bucket["inside"].split()  # what the script runs, not counted as sent
    assert bucket["correct"] is True
    assert bucket["probe"] == "100 of 801 admitted"


def test_request_bytes_counted_by_the_server_match_what_redis_py_wrote(
    report: dict[str, Any],
) -> None:
    get = _rows(report, "lock")["redis-py GET"]
    # GET <key> in RESP, the key being "bench-<8 hex digits>-get" (18 bytes)
    assert get["bytes"] == get["client_bytes"] == len(b"*2\r\n$3\r\nGET\r\n$18\r\n") + 18 + 2
    bucket = _rows(report, "limiter")["redis-patterns TokenBucket"]
    assert bucket["bytes"] == pytest.approx(bucket["client_bytes"], rel=0.02)


def test_concurrent_rows_report_throughput_and_writes_per_operation(
    report: dict[str, Any],
) -> None:
    rows = _rows(report, "ccache")
    # auto-pipelined: the 100 tasks' gets of one turn are one write; opted out, one each
    assert rows["redis-patterns AsyncCache.get"]["round_trips"] == 0.01
    assert rows["redis-patterns AsyncCache.get without batching"]["round_trips"] == 1
    assert rows["redis-patterns AsyncCache.get"]["throughput"] > 0
    # one task pipelining 100 GETs: one write per 100 operations
    assert rows["redis.asyncio pipeline of 100 GETs"]["round_trips"] == 0.01


def test_scan_and_markdown(report: dict[str, Any]) -> None:
    (scan,) = report["scans"]
    assert scan["columns"] == ["1", "1k"]
    assert [r["name"] for r in scan["rows"]] == [
        "FixedWindow", "SlidingLog", "SlidingWindow", "TokenBucket", "GCRA",
    ]  # fmt: skip
    for row in scan["rows"]:
        assert row["commands"] == "EVALSHA"
        assert set(row["cells"]) == {"1", "1k"}
    text = report["markdown"]
    assert "| lock acquire+release |" in text
    assert "| token bucket hit |" in text
    assert "#### Rate limiters by the cost of one hit" in text


def test_cluster_rows_report_writes_per_operation_and_the_masters_reads(
    cluster_report: dict[str, Any],
) -> None:
    """The harness starts its own 3-master cluster for the cluster group."""
    assert cluster_report["meta"]["cluster"].startswith("a 3-master cluster of ")
    (group,) = cluster_report["groups"]
    assert (group["key"], group["topology"]) == ("ccluster", "cluster")
    rows = _rows(cluster_report, "ccluster")
    assert list(rows) == [
        "redis.asyncio RedisCluster GET",
        "raw pipelines per master (100 GETs)",
        "redis-patterns FixedWindow",
        "redis-patterns FixedWindow without batching",
    ]
    for row in rows.values():
        assert set(row) == ROW_KEYS
        assert row["status"] == "ok", row
        assert row["throughput"] > 0
        assert len(row["ops_per_read"]) == 3  # one figure per master (measured, not asserted)
    # the sample: 100 tasks, one call each, in one turn, over three masters
    assert rows["redis-patterns FixedWindow"]["round_trips"] == 0.03
    assert rows["redis-patterns FixedWindow without batching"]["round_trips"] == 1
    assert rows["raw pipelines per master (100 GETs)"]["round_trips"] == 0.03
    assert rows["redis-patterns FixedWindow"]["names"] == "EVALSHA"
    text = cluster_report["markdown"]
    assert "| 100 concurrent tasks, 3-master cluster |" in text
    assert "| fixed window hits |" in text
    assert "#### 100 concurrent asyncio tasks on a 3-master cluster" in text
