"""Demo: Pub/Sub loses what a disconnected subscriber misses; a stream queue loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from ..._core.pubsub import Message
from ..._core.streams import StreamMessage
from ..._sync.pubsub import Publisher, Subscriber
from ..._sync.streams import StreamQueue, Worker
from ..demo import DemoContext, section

EVENTS = 300
DOWN = 100  # events published while both consumers are down

# A worker process that takes a batch of 10, handles 4, then hangs (and gets SIGKILLed).
_VICTIM = """
import sys, time
import redis
from redis_patterns import StreamQueue, Worker
client = redis.Redis.from_url(sys.argv[1])
done = []
def handle(message):
    if len(done) == 4:
        print("hung", flush=True)
        time.sleep(60)
    client.incr(sys.argv[3])
    done.append(message.id)
Worker(StreamQueue(client, sys.argv[2]), "victim", handle, batch=10, block=0.2).run()
"""


@section("messaging", "Pub/Sub vs Streams: who loses messages when a consumer blinks", order=70)
def demo_messaging(ctx: DemoContext) -> bool:
    ok = _blink(ctx)
    return _killed_worker(ctx) and ok


def _blink(ctx: DemoContext) -> bool:
    client = ctx.client()
    channel, name = ctx.key("events"), ctx.key("events")
    queue = StreamQueue(client, name)
    queue.ensure_group()
    publisher = Publisher(client)
    heard: list[int] = []
    handled: list[int] = []

    def listen(sub: Subscriber) -> None:
        for message in sub:
            heard.append(int(message.text()))

    def start_subscriber() -> tuple[Subscriber, threading.Thread]:
        sub = Subscriber(ctx.client(), channels=[channel])
        sub.start()
        thread = threading.Thread(target=listen, args=(sub,))
        thread.start()
        return sub, thread

    def start_worker() -> tuple[Worker, threading.Thread]:
        worker = Worker(queue, "consumer-1", lambda m: handled.append(m.data["n"]), block=0.05)
        thread = threading.Thread(target=worker.run)
        thread.start()
        return worker, thread

    def emit(numbers: range) -> None:
        for n in numbers:
            publisher.publish(channel, str(n))
            queue.add({"n": n})

    def settle(expected_heard: int, expected_handled: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            len(heard) < expected_heard or len(handled) < expected_handled
        ):
            time.sleep(0.01)

    up = (EVENTS - DOWN) // 2
    sub, sub_thread = start_subscriber()
    worker, worker_thread = start_worker()
    emit(range(up))
    settle(up, up)
    # Both consumers go away for a moment (a deploy, a crash, a network blip)...
    sub.close()
    worker.stop()
    sub_thread.join(10)
    worker_thread.join(10)
    emit(range(up, up + DOWN))
    # ...and come back.
    sub, sub_thread = start_subscriber()
    worker, worker_thread = start_worker()
    emit(range(up + DOWN, EVENTS))
    settle(EVENTS - DOWN, EVENTS)
    sub.close()
    worker.stop()
    sub_thread.join(10)
    worker_thread.join(10)
    pending = queue.pending().count

    # A subscriber whose connection is cut mid-stream reconnects by itself and reports the gap.
    gaps: list[float] = []
    blinker = Subscriber(
        ctx.client(client_name="demo-blinker"),
        channels=[channel],
        on_gap=lambda gap: gaps.append(gap.duration),
    )
    blinker.start()
    got: list[Message] = []
    reader = threading.Thread(target=lambda: got.extend(iter(blinker)))
    reader.start()
    for n in range(200):
        publisher.publish(channel, str(n))
        if n == 100:
            for entry in client.client_list(_type="pubsub"):
                if entry.get("name") == "demo-blinker":
                    client.client_kill_filter(_id=entry["id"])
        time.sleep(0.0005)
    deadline = time.monotonic() + 5
    while not gaps and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    blinker.close()
    reader.join(10)
    queue.delete()
    client.close()

    missed = EVENTS - len(set(heard))
    ctx.say(f"{EVENTS} events; both consumers down while {DOWN} of them were published")
    ctx.say(f"Pub/Sub subscriber (restarted):   received {len(set(heard))}, missed {missed}")
    ctx.say(
        f"Stream consumer (restarted):      handled {len(set(handled))}, missed "
        f"{EVENTS - len(set(handled))}, pending afterwards {pending}"
    )
    gap_ms = f"{gaps[0] * 1000:.1f} ms" if gaps else "n/a"
    ctx.say(
        f"Subscriber with its connection killed mid-stream: {blinker.gaps} gap reported "
        f"(reconnected in {gap_ms}), {200 - len(got)} of 200 messages missed"
    )
    return (
        missed == DOWN
        and sorted(set(handled)) == list(range(EVENTS))
        and pending == 0
        and blinker.gaps == 1
        and len(gaps) == 1
    )


def _killed_worker(ctx: DemoContext) -> bool:
    client = ctx.client()
    name, counter = ctx.key("jobs"), ctx.key("victim-handled")
    queue = StreamQueue(client, name)
    for n in range(30):
        queue.add({"job": n})
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, ctx.url, name, counter],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None
        hung = victim.stdout.readline().strip() == "hung"
        held = queue.pending().consumers.get("victim", 0)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if victim.stdout:
            victim.stdout.close()
    victim_handled = int(client.get(counter) or 0)

    claim_idle = 0.5
    rescued: list[StreamMessage] = []
    first_reclaim: list[float] = []

    def handle(message: StreamMessage) -> None:
        if message.deliveries > 1 and not first_reclaim:
            first_reclaim.append(time.monotonic() - killed_at)
        rescued.append(message)

    rescuer = Worker(queue, "rescuer", handle, batch=10, block=0.05, claim_idle=claim_idle)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        len(rescued) < 30 - victim_handled or queue.pending().count
    ):
        rescuer.run_once()
    pending = queue.pending().count
    redelivered = sum(1 for m in rescued if m.deliveries > 1)
    duplicates = victim_handled + len(rescued) - 30
    queue.delete()
    client.delete(counter)
    client.close()
    took = f"{first_reclaim[0]:.2f} s" if first_reclaim else "never"
    ctx.say(
        f"Worker SIGKILLed holding {held} entries ({victim_handled} already handled, not acked)"
    )
    ctx.say(
        f"Another worker reclaimed {redelivered} of them {took} after the kill "
        f"(claim_idle {claim_idle} s); {duplicates} handled twice; pending afterwards {pending}"
    )
    return hung and held == 10 and redelivered == held and pending == 0 and duplicates == 4
