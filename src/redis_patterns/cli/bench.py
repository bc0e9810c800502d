"""``redis-patterns bench``: the package's built-in benchmarks (peers: ``make bench``)."""

from __future__ import annotations

from collections.abc import Sequence


def run_bench(*, url: str | None, operations: int, only: Sequence[str]) -> int:
    from .._bench import main as bench_main

    return bench_main(url=url, operations=operations, only=list(only))
