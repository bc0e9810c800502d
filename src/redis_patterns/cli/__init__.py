"""The ``redis-patterns`` command: demo, server, check, bench, queue, locks, limits, dashboard."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-patterns",
        description="Common Redis patterns done right: a tour, a local server, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"redis-patterns {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="a guided, measured tour of every pattern")
    demo.add_argument("--url", help="use this server instead of an embedded one")
    demo.add_argument("sections", nargs="*", help="run only these sections (default: all)")
    demo.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SECTION[,SECTION]",
        help="run only these sections (repeatable, comma-separated)",
    )
    demo.add_argument("--list", action="store_true", help="list the sections and exit")

    server = commands.add_parser("server", help="run the embedded server in the foreground")
    server.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    server.add_argument(
        "--binary", default=None, help="'valkey' (embedded, default) or 'redis-server'"
    )
    server.add_argument("--appendonly", action="store_true", help="persist with an AOF")

    check = commands.add_parser(
        "check",
        help="audit a deployment (version, eviction, persistence, latency, scripts)",
        description="Exit status: 0 if all findings are ok or info, 1 on a warning, 2 on an error.",
    )
    check.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL"),
        help="the server to audit, e.g. redis://host:6379 (default: $REDIS_URL)",
    )
    check.add_argument("--json", action="store_true", help="print the findings as JSON")

    bench = commands.add_parser("bench", help="throughput, latency and commands per operation")
    bench.add_argument("--url", help="benchmark against this server instead of an embedded one")
    bench.add_argument("-n", "--operations", type=int, default=2000, help="calls per benchmark")
    bench.add_argument("names", nargs="*", help="run only these benchmarks (default: all)")

    from .ops import add_parsers

    add_parsers(commands, os.environ.get("REDIS_URL"))

    dashboard = commands.add_parser(
        "dashboard",
        help="a live web page of queues, locks and leaderboards",
        description="Serves on 127.0.0.1 only, unless --allow-remote and a token are given.",
    )
    dashboard.add_argument(
        "--url", default=os.environ.get("REDIS_URL"), help="the server (default: $REDIS_URL)"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dashboard.add_argument("--read-only", action="store_true", help="no replay / purge")
    dashboard.add_argument(
        "--token",
        help="require this token on every request (or set $REDIS_PATTERNS_DASHBOARD_TOKEN)",
    )
    dashboard.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (needs a token)"
    )
    dashboard.add_argument("--refresh", type=float, default=2.0, help="seconds between updates")
    dashboard.add_argument(
        "--scan-every", type=float, default=10.0, help="seconds between key discovery scans"
    )
    dashboard.add_argument(
        "--metrics-url",
        help="an app's Prometheus endpoint (e.g. http://127.0.0.1:8000/metrics) to show",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``redis-patterns`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        only = [*args.sections, *(n for group in args.only for n in group.split(",") if n)]
        return run_demo(url=args.url, only=only, list_only=args.list)
    if args.command == "server":
        from .server import run_server

        return run_server(port=args.port, binary=args.binary, appendonly=args.appendonly)
    if args.command == "check":
        from .check import run_check

        if not args.url:
            print("redis-patterns check: give --url (or set REDIS_URL)", file=sys.stderr)
            return 2

        return run_check(url=args.url, as_json=args.json)
    if args.command == "bench":
        from .bench import main as run_bench

        return run_bench(url=args.url, operations=args.operations, only=args.names)
    if args.command in ("queue", "locks", "limits"):
        from .ops import run

        return run(args)
    if args.command == "dashboard":
        from .dashboard import run_dashboard

        if not args.url:
            print("redis-patterns dashboard: give --url (or set REDIS_URL)", file=sys.stderr)
            return 2
        return run_dashboard(
            url=args.url,
            host=args.host,
            port=args.port,
            read_only=args.read_only,
            token=args.token,
            allow_remote=args.allow_remote,
            refresh=args.refresh,
            scan_every=args.scan_every,
            metrics_url=args.metrics_url,
        )
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
