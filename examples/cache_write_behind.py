"""Write-through and write-behind with SQLite as the database."""

from __future__ import annotations

import sqlite3

import redis_patterns
from redis_patterns import Cache, PendingWrite, WriteBehind, WriteThrough

client = redis_patterns.connect()
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, version INTEGER DEFAULT 0)")
cache = Cache(client, "example.profiles", ttl=600)


# Write-through: the database first, then the cache.
def store(key: str, value: str) -> None:
    with db:
        db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (key, value))


through = WriteThrough(cache, store=store)
through.write("profile:1", "hello")
assert cache.get("profile:1") == "hello"


# Write-behind: the cache now, the database in coalesced batches; the version column keeps a
# late (reclaimed) batch from overwriting a newer value.
def flush(batch: list[PendingWrite]) -> None:
    with db:
        db.executemany(
            "INSERT INTO kv (k, v, version) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE "
            "SET v = excluded.v, version = excluded.version WHERE excluded.version > kv.version",
            [(w.key, w.value, w.version) for w in batch],
        )


behind = WriteBehind(cache, flush=flush, batch_size=100, interval=0.1)
for i in range(50):
    behind.write(f"counter:{i % 5}", str(i))  # cache + durable stream entry, one round trip
result = behind.flush_once("flusher-1")  # in production: behind.run("flusher-1") in a worker
rows = dict(db.execute("SELECT k, v FROM kv WHERE k LIKE 'counter:%'").fetchall())
assert rows == {f"counter:{i}": str(45 + i) for i in range(5)}
print(f"{result.read} writes -> {result.flushed} database rows; pending: {behind.pending()}")
