"""Run the built-in benchmarks plus every ``benchmarks/bench_*.py`` module (peer comparisons)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks
from redis_patterns.cli.bench import main


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--url", default=None, help="server to use (default: an embedded one)")
    parser.add_argument("-n", "--operations", type=int, default=5000)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    for module in pkgutil.iter_modules(benchmarks.__path__):
        if module.name.startswith("bench_"):
            try:
                importlib.import_module(f"benchmarks.{module.name}")
            except ImportError as exc:  # a peer library is not installed
                print(f"skipping benchmarks/{module.name}.py: {exc}", file=sys.stderr)
    return main(url=args.url, operations=args.operations, only=args.names)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
