"""Pub/Sub: a pattern subscription that reconnects by itself and reports its gaps."""

from __future__ import annotations

from redis_patterns import Gap, Publisher, Subscriber, connect


def on_gap(gap: Gap) -> None:
    # Messages published during the gap are gone (Pub/Sub stores nothing): resync here.
    print(f"reconnected after {gap.duration:.3f}s ({gap.error}); reloading state")


def main() -> None:
    client = connect()
    with Subscriber(client, patterns=["orders.*"], on_gap=on_gap) as subscriber:
        publisher = Publisher(client)
        receivers = publisher.publish("orders.created", {"id": 123, "total": 59.99})
        publisher.publish("orders.shipped", {"id": 120, "carrier": "FedEx"})
        print(f"orders.created reached {receivers} subscriber(s)")
        for _ in range(2):
            message = subscriber.get(timeout=5)
            assert message is not None
            print(f"{message.channel} (via {message.pattern}): {message.json()}")
        print(f"gaps so far: {subscriber.gaps}")


if __name__ == "__main__":
    main()
