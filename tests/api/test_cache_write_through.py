"""WriteThrough with SQLite as the real database: database first, consistent when either fails."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncCache,
    AsyncWriteThrough,
    BackendError,
    Cache,
    ConfigurationError,
    WriteThrough,
)
from redis_patterns.testing.pytest_plugin import Backend


class Table:
    """A key-value table in SQLite, the "database" of these tests."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)")
        self.fail = False

    def store(self, key: str, value: Any) -> None:
        if self.fail:
            raise sqlite3.OperationalError("database is locked")
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, repr(value)))

    def remove(self, key: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM kv WHERE k = ?", (key,))

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Table]:
    made = Table(tmp_path / "db.sqlite")
    yield made
    made.db.close()


def test_writes_database_then_cache(client: Any, prefix: str, table: Table) -> None:
    cache = Cache(client, prefix, 60)
    through = WriteThrough(cache, store=table.store, remove=table.remove)
    through.write("u1", {"name": "Ada"})
    assert table.get("u1") == "{'name': 'Ada'}"
    assert cache.get("u1") == {"name": "Ada"}
    assert through.read("u1", lambda: pytest.fail("must be a cache hit")) == {"name": "Ada"}
    through.delete("u1")
    assert table.get("u1") is None
    assert cache.get("u1") is None


def test_failed_database_write_leaves_cache_untouched(
    client: Any, prefix: str, table: Table
) -> None:
    cache = Cache(client, prefix, 60)
    through = WriteThrough(cache, store=table.store)
    through.write("k", "v1")
    before = client.get(cache.key_of("k"))
    table.fail = True
    with pytest.raises(sqlite3.OperationalError):
        through.write("k", "v2")
    assert client.get(cache.key_of("k")) == before  # byte for byte
    assert table.get("k") == "'v1'"


def test_unstorable_value_fails_before_the_database(
    backend: Backend, prefix: str, table: Table
) -> None:
    cache = Cache(backend.client(), prefix, 60)
    through = WriteThrough(cache, store=table.store)
    with backend.counter() as seen, pytest.raises(ConfigurationError, match="set"):
        through.write("k", {1, 2})
    assert seen.count == 0
    assert table.get("k") is None


@pytest.mark.fault
def test_failed_cache_write_leaves_no_stale_entry(
    backend: Backend, prefix: str, table: Table
) -> None:
    """The database write succeeds, then the cache is unreachable (writes paused past the
    client's timeout): the old entry must never be served afterwards."""
    if backend.is_cluster:
        pytest.skip("CLIENT PAUSE is per node; covered on standalone servers")
    no_retry = Retry(NoBackoff(), 0)  # redis-py would re-send (and wait out the pause)
    cache = Cache(backend.client(socket_timeout=0.1, retry=no_retry), prefix, 60)
    through = WriteThrough(cache, store=table.store)
    through.write("k", "old")
    pause = 2.0
    admin: Any = backend.client()
    admin.execute_command("CLIENT", "PAUSE", int(pause * 1000), "ALL")
    paused = time.monotonic()
    with pytest.raises(BackendError, match="neither be updated nor deleted"):
        through.write("k", "new")
    assert table.get("k") == "'new'"
    # Still paused: this object never serves the possibly stale entry.
    assert through.read("k", lambda: "from-db") == "from-db"
    assert time.monotonic() - paused < pause  # the checks above ran during the outage
    time.sleep(max(0.0, pause + 0.1 - (time.monotonic() - paused)))
    assert through.read("k", lambda: "from-db") in ("from-db", "new")
    assert cache.get("k") in (None, "new", "from-db")
    assert not through._core.dirty


async def test_async_write_through(backend: Backend, prefix: str, table: Table) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)

    async def store(key: str, value: Any) -> None:
        table.store(key, value)

    through = AsyncWriteThrough(cache, store=store)
    await through.write("k", [1, 2])
    assert await cache.get("k") == [1, 2]
    assert table.get("k") == "[1, 2]"
    with pytest.raises(ConfigurationError, match="not an async function"):
        AsyncWriteThrough(cache, store=table.store)
    await client.aclose()
