"""A stream worker process for the fault tests: handles entries until SIGTERM, then reports.

Usage: python tests/faults/streams_worker_proc.py NODES NAME CONSUMER FLAVOR CLAIM_IDLE BATCH
       SLEEP HANG [REAP_IDLE]
NODES is ``host:port`` for a standalone server or ``cluster:host:port,host:port,...``.
Every handled id is counted in the hash ``<NAME>:handled`` (HINCRBY id 1), and the number of
entries this consumer handled in ``<NAME>:count:<CONSUMER>``. With HANG > 0 the handler
hangs (sleeps a minute) after handling HANG entries: a worker stuck mid-batch, to be killed.
REAP_IDLE is the worker's ``reap_idle`` (seconds; the default when absent).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from redis_patterns import (
    AsyncStreamQueue,
    AsyncWorker,
    StreamMessage,
    StreamQueue,
    Worker,
    stop_on_signals,
)


def make_client(nodes: str, *, is_async: bool) -> Any:
    if nodes.startswith("cluster:"):
        pairs = [n.rsplit(":", 1) for n in nodes[len("cluster:") :].split(",")]
        if is_async:
            startup = [redis.asyncio.cluster.ClusterNode(h, int(p)) for h, p in pairs]
            return redis.asyncio.cluster.RedisCluster(startup_nodes=startup)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, int(p)) for h, p in pairs]
        )
    host, port = nodes.rsplit(":", 1)
    if is_async:
        return redis.asyncio.Redis(host=host, port=int(port))
    return redis.Redis(host=host, port=int(port))


def main(argv: list[str]) -> int:
    nodes, name, consumer, flavor, claim_idle, batch, sleep, hang = argv[:8]
    done = [0]
    options = {"batch": int(batch), "block": 0.5, "claim_idle": float(claim_idle)}
    if len(argv) > 8:
        options["reap_idle"] = float(argv[8])
    handled_key, count_key = f"{name}:handled", f"{name}:count:{consumer}"
    if flavor == "sync":
        client = make_client(nodes, is_async=False)

        def handle(message: StreamMessage) -> None:
            time.sleep(60 if done[0] == int(hang) > 0 else float(sleep))
            client.hincrby(handled_key, message.id, 1)
            client.incr(count_key)
            done[0] += 1

        worker = Worker(StreamQueue(client, name), consumer, handle, **options)  # type: ignore[arg-type]
        stop_on_signals(worker)
        print("ready", flush=True)
        stats = worker.run()
    else:

        async def run() -> Any:
            aclient = make_client(nodes, is_async=True)

            async def ahandle(message: StreamMessage) -> None:
                await asyncio.sleep(60 if done[0] == int(hang) > 0 else float(sleep))
                await aclient.hincrby(handled_key, message.id, 1)
                await aclient.incr(count_key)
                done[0] += 1

            queue = AsyncStreamQueue(aclient, name)
            aworker = AsyncWorker(queue, consumer, ahandle, **options)  # type: ignore[arg-type]
            stop_on_signals(aworker)
            print("ready", flush=True)
            result = await aworker.run()
            await aclient.aclose()
            return result

        stats = asyncio.run(run())
    print(orjson.dumps({"handled": stats.handled, "claimed": stats.claimed,
                        "released": stats.released}).decode(), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
