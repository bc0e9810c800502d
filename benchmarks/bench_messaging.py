"""Messaging throughput: stream messages/s end to end (add -> handled -> acked) with 1 and 4
worker processes, and Pub/Sub messages/s (published, and received by one subscriber).

Run: ``python benchmarks/bench_messaging.py [--url redis://...] [--messages 20000]``; without
``--url`` it starts an embedded server. Not run by pytest. Numbers depend on the machine: the
docs quote the ones measured on a shared 2-core box.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from multiprocessing.synchronize import Event

from redis_patterns import (
    EmbeddedServer,
    Publisher,
    StreamMessage,
    StreamQueue,
    Subscriber,
    Worker,
    connect,
)


def _worker(url: str, name: str, consumer: str, stop: Event) -> None:
    client = connect(url)

    def handle(message: StreamMessage) -> None:
        pass  # the cost measured is the queue's, not a handler's

    worker = Worker(StreamQueue(client, name), consumer, handle, batch=100, block=0.05)
    while not stop.is_set():
        worker.run_once()
    worker.stop()
    worker.run()


def bench_stream(url: str, messages: int, workers: int) -> float:
    client = connect(url)
    name = f"bench:{time.time_ns()}"
    queue = StreamQueue(client, name)
    queue.ensure_group()
    stop = multiprocessing.Event()
    procs = [
        multiprocessing.Process(target=_worker, args=(url, name, f"w{i}", stop))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let the workers import and connect
    started = time.perf_counter()
    for n in range(messages):
        queue.add({"n": n})
    while True:
        info = queue.info()
        if info.lag == 0 and info.pending == 0:
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    for proc in procs:
        proc.join(30)
    queue.delete()
    return messages / elapsed


def _subscriber(url: str, channel: str, expected: int, ready: Event, result: Event) -> None:
    sub = Subscriber(connect(url), channels=[channel])
    sub.start()
    ready.set()
    received = 0
    while received < expected:
        if sub.get(timeout=5) is None:
            break
        received += 1
    sub.close()
    if received == expected:
        result.set()


def bench_pubsub(url: str, messages: int) -> tuple[float, float]:
    channel = f"bench:{time.time_ns()}"
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    proc = multiprocessing.Process(target=_subscriber, args=(url, channel, messages, ready, done))
    proc.start()
    ready.wait(30)
    publisher = Publisher(connect(url))
    started = time.perf_counter()
    for n in range(messages):
        publisher.publish(channel, str(n))
    published = time.perf_counter() - started
    proc.join(60)
    received = time.perf_counter() - started
    if not done.is_set():
        raise SystemExit("the subscriber did not receive every message")
    return messages / published, messages / received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--messages", type=int, default=20_000)
    options = parser.parse_args()
    server = None
    url = options.url
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
    try:
        n = options.messages
        print(f"{n} messages per run against {url}")
        for workers in (1, 4):
            rate = bench_stream(url, n, workers)
            print(
                f"stream add -> handled -> acked, {workers} worker process(es): {rate:,.0f} msg/s"
            )
        sent, got = bench_pubsub(url, n)
        print(f"pub/sub: published {sent:,.0f} msg/s; received by one subscriber {got:,.0f} msg/s")
    finally:
        if server is not None:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    main()
