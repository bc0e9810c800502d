"""A reliable work queue: at-least-once handling, reclaiming, and a dead-letter stream."""

from __future__ import annotations

import threading

from redis_patterns import StreamMessage, StreamQueue, Worker, connect, stop_on_signals


def main() -> None:
    client = connect()
    queue = StreamQueue(client, "emails", max_len=100_000)
    for n in range(20):
        queue.add({"to": f"user{n}@example.com", "template": "welcome"})
    queue.add({"to": "not-an-address", "template": "welcome"})

    sent: set[str] = set()

    def send_email(message: StreamMessage) -> None:
        if "@" not in message.data["to"]:
            raise ValueError(f"bad address {message.data['to']!r}")
        # Idempotent: the entry id is the idempotency key, so a redelivery sends nothing twice.
        sent.add(message.id)

    worker = Worker(queue, "mailer-1", send_email, block=0.1, claim_idle=0.2, max_deliveries=3)
    stop_on_signals(worker)  # SIGTERM / Ctrl-C: finish the current email, release the rest

    def stop_when_done() -> None:
        while len(sent) < 20 or not queue.dead_letters():
            threading.Event().wait(0.05)
        worker.stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    stats = worker.run()
    print(f"sent {len(sent)} emails; worker stats: {stats}")
    for dead in queue.dead_letters():
        print(f"dead letter {dead.original_id}: {dead.data}")
        print(f"  after {dead.deliveries} tries: {dead.error}")
    info = queue.info()
    print(f"length {info.length}, lag {info.lag}, pending {info.pending}, dead {info.dead_letters}")
    queue.delete()


if __name__ == "__main__":
    main()
