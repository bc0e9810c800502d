"""Run the benchmark harness: every contender of issue 16, the size scans, Markdown and a chart.

``python -m benchmarks.run [--quick] [--groups lock,limiter] [--only NAME,...]
[--json PATH] [--markdown PATH] [--chart PATH]``. It starts its own embedded server (nobody else
uses it), pins itself and the server to different CPUs when there are two, and prints (or
writes) the Markdown that ``make bench-peers`` puts into docs/benchmarks.md. The cluster groups run
last, on a 3-master `EmbeddedCluster` the harness starts for them once the standalone groups are
done (its nodes on the server's CPU). ``--quick`` is a smoke run (a few rounds; numbers not
worth reading).
See `benchmarks.harness` for what each column measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks import contenders, render, scans
from benchmarks.harness import (
    ClusterEnv,
    Env,
    Group,
    GroupResult,
    ServerStats,
    Settings,
    as_dict,
    collect_garbage,
    pin_like,
    pinned,
    run_group,
    server_label,
)
from redis_patterns import EmbeddedCluster, EmbeddedServer


def _load() -> str:
    try:
        return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def _flush(server: EmbeddedServer) -> None:
    """Empty the server between groups (waiting out a script still running, if any)."""
    deadline = time.monotonic() + 120
    with server.client(socket_timeout=None) as client:
        while True:
            try:
                client.flushall()
                return
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSY") or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _select(groups: list[Group], keys: list[str], only: list[str]) -> list[Group]:
    chosen = [g for g in groups if not keys or g.key in keys]
    if not only:
        return chosen
    picked = []
    for group in chosen:
        kept = tuple(c for c in group.contenders if c.name in only or c.name == group.baseline)
        if len(kept) > 1:
            picked.append(dataclasses.replace(group, contenders=kept))
    return picked


def _run_cluster_groups(
    groups: list[Group],
    settings: Settings,
    binary: str | None,
    server: EmbeddedServer,
    progress: bool,
) -> tuple[str, list[GroupResult]]:
    """The cluster groups on a 3-master cluster of their own (the standalone server idle);
    returns what the cluster was and the groups' results."""
    if not groups:
        return "", []
    results = []
    with EmbeddedCluster(3, binary) as cluster:
        pin_like([node.pid for node in cluster.nodes], server.pid)
        version = server_label(Env(cluster.nodes[0], settings))
        label = f"a 3-master cluster of {version}, its nodes on the standalone server's CPUs"
        for group in groups:
            if progress:
                print(f"group {group.key} (cluster) ...", file=sys.stderr, flush=True)
            env = ClusterEnv(cluster, settings)
            stats = ServerStats(env)
            stats.calibrate()
            results.append(run_group(group, env, stats))
            for node in cluster.masters():
                _flush(node)
            collect_garbage()
    return label, results


def run(
    settings: Settings,
    *,
    groups: list[str] = (),  # type: ignore[assignment]
    only: list[str] = (),  # type: ignore[assignment]
    scan_keys: list[str] | None = None,
    pin: bool = True,
    binary: str | None = None,
    flags: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Measure and return the results as plain data (what ``--json`` writes)."""
    started = time.monotonic()
    load_before = _load()
    selected = _select(contenders.groups(), list(groups), list(only))
    wanted_scans = list(scans.SCANS) if scan_keys is None else scan_keys
    if not settings.scans:
        wanted_scans = []
    with EmbeddedServer(binary) as server, pinned(server.pid, pin) as pinning:
        stats_env = Env(server, settings)
        stats = ServerStats(stats_env)
        stats.calibrate()
        label = server_label(stats_env)
        group_results = []
        for group in selected:
            if group.topology != "standalone":
                continue
            if progress:
                print(f"group {group.key} ...", file=sys.stderr, flush=True)
            group_results.append(run_group(group, Env(server, settings), stats))
            _flush(server)
            collect_garbage()
        clustered = [g for g in selected if g.topology == "cluster"]
        cluster, cluster_results = _run_cluster_groups(
            clustered, settings, binary, server, progress
        )
        group_results += cluster_results
        scan_results = []
        for key in wanted_scans:
            if progress:
                print(f"scan {key} ...", file=sys.stderr, flush=True)
            scan_env = Env(server, settings)
            scan_results.append(scans.SCANS[key](scan_env, stats))
            scan_env.close()
            _flush(server)
            collect_garbage()
        stats_env.close()
    return {
        "meta": {
            "server": label,
            "cluster": cluster,
            "pinning": pinning,
            "cpus": os.cpu_count(),
            "date": datetime.date.today().isoformat(),
            "python": sys.version.split()[0],
            "flags": flags,
            "seconds": time.monotonic() - started,
            "load_before": load_before,
            "load_after": _load(),
            "info_request_bytes": stats.info_bytes,
            **dataclasses.asdict(settings),
        },
        "groups": as_dict(group_results),
        "scans": [dataclasses.asdict(s) for s in scan_results],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds and calls")
    parser.add_argument("--groups", default="", help="comma-separated group keys (default: all)")
    parser.add_argument("--only", default="", help="comma-separated contender names")
    parser.add_argument("--scans", default=None, help="comma-separated scan keys ('' for none)")
    parser.add_argument("--no-probes", action="store_true", help="skip the correctness probes")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--calls", type=int, help="override calls per round")
    parser.add_argument("--server", default=None, help="valkey (embedded) or redis-server")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown here (default: stdout)")
    parser.add_argument("--chart", type=Path, help="write the chart (PNG or SVG) here")
    parser.add_argument("--chart-link", help="how the Markdown refers to the chart")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    changes: dict[str, Any] = {"probes": not args.no_probes}
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.calls:
        changes["calls"] = args.calls
    if args.scans == "":
        changes["scans"] = False
    settings = dataclasses.replace(settings, **changes)
    flags = " --quick" if args.quick else ""
    data = run(
        settings,
        groups=[g for g in args.groups.split(",") if g],
        only=[n for n in args.only.split(",") if n],
        scan_keys=None if not args.scans else args.scans.split(","),
        pin=not args.no_pin,
        binary=args.server,
        flags=flags,
    )
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    link = None
    if args.chart and render.chart(data, args.chart):
        link = args.chart_link or args.chart.name
    text = render.markdown(data, link)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
