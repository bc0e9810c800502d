"""What metrics cost: a limiter hit and cache hits with metrics off, Prometheus on, OpenTelemetry
on and both, in interleaved rounds against a private embedded server.

``python -m benchmarks.metrics_overhead [--quick] [--json PATH]``. Round r runs every mode
(exporters switched on or off between them) in a rotated order, ``calls`` calls of each
operation per mode, so machine noise hits all modes alike. Per operation and mode it reports
the median over rounds of (time per call / the same round's time with metrics off), the client
CPU µs per call (``time.process_time``: this process only; the server is another process), and
the cost of one recording alone (a tight loop of ``Metric.record``), which is what the ratio's
excess should be made of. The goal is a ratio of at most 1.03.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from benchmarks.harness import pinned
from redis_patterns import Cache, EmbeddedServer, FixedWindow, _metrics, metrics

MODES = ("off", "prometheus", "opentelemetry", "both")


def _switch(mode: str) -> Callable[[], None]:
    """A function that turns ``mode``'s exporters on (fresh registry / provider each time)."""

    def on() -> None:
        metrics.disable()
        if mode in ("prometheus", "both"):
            from prometheus_client import CollectorRegistry

            metrics.use_prometheus(CollectorRegistry())
        if mode in ("opentelemetry", "both"):
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            metrics.use_opentelemetry(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    return on


def _ops(client: Any) -> dict[str, Callable[[], object]]:
    limiter = FixedWindow(client, 10**15, 86400, name="bench")
    cache = Cache(client, namespace="bench-metrics", ttl=3600)
    cache.set("hot", {"user": 42})
    stale = Cache(client, namespace="bench-metrics-xfetch", ttl=3600, stampede="xfetch")
    stale.set("hot", {"user": 42})

    def load() -> object:
        return {"user": 42}

    return {
        "limiter hit": lambda: limiter.hit("user-42"),
        "cache get (hit)": lambda: cache.get("hot"),
        "cache get_or_load (hit)": lambda: stale.get_or_load("hot", load),
    }


def _record_cost() -> dict[str, float]:
    """ns per `Metric.record` of one series, per mode (no I/O)."""
    out = {}
    labels = ("bench", "allowed")
    for mode in MODES:
        _switch(mode)()
        metric = _metrics.LIMITER_DECISIONS

        def record(metric: Any = metric) -> None:
            if _metrics.on:
                metric.record(labels)

        number = 200_000
        out[mode] = min(timeit.repeat(record, number=number, repeat=5)) / number * 1e9
    metrics.disable()
    return out


def run(rounds: int, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": rounds, "calls": calls, "ops": {}}
    with EmbeddedServer() as server, pinned(server.pid) as pinning:
        results["pinning"] = pinning
        client = server.client()
        ops = _ops(client)
        switches = {mode: _switch(mode) for mode in MODES}
        for name, op in ops.items():
            for _ in range(calls):  # warm up: scripts loaded, connection open
                op()
            wall: dict[str, list[float]] = {m: [] for m in MODES}
            cpu: dict[str, list[float]] = {m: [] for m in MODES}
            for r in range(rounds):
                order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
                for mode in order:
                    switches[mode]()
                    op()  # bind this mode's series outside the timed window
                    started, cpu_started = time.perf_counter(), time.process_time()
                    for _ in range(calls):
                        op()
                    wall[mode].append((time.perf_counter() - started) / calls)
                    cpu[mode].append((time.process_time() - cpu_started) / calls)
            metrics.disable()
            rows = {}
            for mode in MODES:
                ratios = [w / off for w, off in zip(wall[mode], wall["off"], strict=True)]
                rows[mode] = {
                    "ratio": statistics.median(ratios),
                    # the quietest tenth of the rounds: what is left when the machine is calm
                    "fast_ratio": _decile(wall[mode]) / _decile(wall["off"]),
                    "us_per_call": statistics.median(wall[mode]) * 1e6,
                    "client_cpu_us": statistics.median(cpu[mode]) * 1e6,
                    "cpu_ratio": statistics.median(cpu[mode]) / statistics.median(cpu["off"]),
                }
            results["ops"][name] = rows
        client.close()
    results["record_ns"] = _record_cost()
    return results


def _decile(values: list[float]) -> float:
    return sorted(values)[len(values) // 10]


def render(results: dict[str, Any]) -> str:
    lines = [
        f"{results['rounds']} interleaved rounds x {results['calls']} calls; {results['pinning']}",
        "",
        "| operation | metrics | time ratio to off (median of rounds) | fastest tenth's ratio "
        "| µs/call | client CPU µs/call | CPU ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results["ops"].items():
        for mode, row in rows.items():
            lines.append(
                f"| {name} | {mode} | {row['ratio']:.3f} | {row['fast_ratio']:.3f} | "
                f"{row['us_per_call']:.1f} | "
                f"{row['client_cpu_us']:.1f} | {row['cpu_ratio']:.3f} |"
            )
    record = results["record_ns"]
    lines += ["", "One recording alone (ns, the `if _metrics.on:` check included): " + ", ".join(
        f"{mode} {ns:.0f}" for mode, ns in record.items()
    )]  # fmt: skip
    limiter_us = results["ops"]["limiter hit"]["off"]["us_per_call"]
    lines.append(
        "That is, per limiter hit of "
        f"{limiter_us:.0f} µs here: "
        + ", ".join(
            f"{mode} {(record[mode] - record['off']) / (limiter_us * 1000):.2%}"
            for mode in MODES[1:]
        )
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_overhead")
    parser.add_argument("--quick", action="store_true", help="a few short rounds (smoke run)")
    parser.add_argument("--json", help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    # many short rounds: a burst of load from elsewhere falls on few of them, and on all modes
    rounds, calls = (40, 100) if args.quick else (200, 200)
    results = run(rounds, calls)
    print(render(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
