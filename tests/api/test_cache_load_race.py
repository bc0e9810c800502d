"""A load that read the database before an update never stores over a newer load's value.

Found by the failover tests (tests/topology/test_pattern_failover.py), where it showed as stale
reads with no fault at all: loader A reads the old row; the row is updated and the key deleted
(A's lock becomes a tombstone); loader B takes the lock over the tombstone, stores the new value
and releases the lock; A's store then found no lock at all, took that for "nobody objects" and
overwrote B's value with the old one, until the entry expired.
"""

from __future__ import annotations

import threading

from redis_patterns import Cache
from redis_patterns.testing.pytest_plugin import Backend


def test_a_load_older_than_a_delete_does_not_overwrite_a_newer_load(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    first, second, writer = (Cache(client, prefix, 60) for _ in range(3))  # three processes
    row = {"version": 1}
    read, release = threading.Event(), threading.Event()

    def slow_loader() -> int:
        version = row["version"]
        read.set()
        assert release.wait(10)
        return version

    results: list[int] = []
    loading = threading.Thread(target=lambda: results.append(first.get_or_load("k", slow_loader)))
    loading.start()
    assert read.wait(10)  # A has read version 1 and holds the recompute lock
    row["version"] = 2
    writer.delete("k")  # A's lock becomes a tombstone
    assert second.get_or_load("k", lambda: row["version"]) == 2  # B stores 2, lets the lock go
    release.set()
    loading.join(10)
    assert results == [1]  # A still answers its own caller with what it read
    assert writer.get("k") == 2  # ... but did not store it over B's newer value


def test_the_same_for_a_batch_load(backend: Backend, prefix: str) -> None:
    client = backend.client()
    first, second, writer = (Cache(client, prefix, 60) for _ in range(3))
    row = {"version": 1}
    read, release = threading.Event(), threading.Event()

    def slow_loader(keys: list[str]) -> dict[str, int]:
        version = row["version"]
        read.set()
        assert release.wait(10)
        return dict.fromkeys(keys, version)

    results: list[list[int]] = []
    loading = threading.Thread(
        target=lambda: results.append(first.get_or_load_many(["k"], slow_loader))
    )
    loading.start()
    assert read.wait(10)
    row["version"] = 2
    writer.delete("k")
    assert second.get_or_load_many(["k"], lambda keys: dict.fromkeys(keys, row["version"])) == [2]
    release.set()
    loading.join(10)
    assert results == [[1]]
    assert writer.get("k") == 2
