"""A write-behind flusher process for the crash test: flushes into SQLite with per-key versions.

argv: kind port namespace db_path consumer claim_idle batch_size stall_after_rows
With stall_after_rows > 0 the flusher stops in the middle of a batch after that many rows
(printing "stalled"), so the test can SIGKILL it mid-batch deterministically.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from types import FrameType

import redis
import redis.cluster

from redis_patterns import Cache, PendingWrite, WriteBehind


def main() -> int:
    kind, port, namespace, db_path, consumer, claim_idle, batch_size, stall = sys.argv[1:9]
    client: redis.Redis | redis.cluster.RedisCluster
    if kind == "cluster":
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=int(port))
    else:
        client = redis.Redis(host="127.0.0.1", port=int(port))
    db = sqlite3.connect(db_path, timeout=30)
    rows = 0
    stall_after = int(stall)

    def flush(batch: list[PendingWrite]) -> None:
        nonlocal rows
        for write in batch:
            with db:  # one transaction per row: a kill leaves some rows of the batch written
                db.execute(
                    "INSERT INTO kv (k, v, version) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE "
                    "SET v = excluded.v, version = excluded.version "
                    "WHERE excluded.version > kv.version",
                    (write.key, write.value, write.version),
                )
                db.execute("UPDATE counters SET db_writes = db_writes + 1")
            rows += 1
            if stall_after and rows >= stall_after:
                print("stalled", flush=True)
                time.sleep(3600)  # the test SIGKILLs us here, mid-batch

    cache = Cache(client, namespace, 600)
    behind = WriteBehind(
        cache, flush, batch_size=int(batch_size), interval=0.05, claim_idle=float(claim_idle)
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        behind.stop()

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    behind.run(consumer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
