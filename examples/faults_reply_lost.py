"""A reply lost after the server ran the command: what the library's client does, and redis-py's.

Runs as-is: an embedded Valkey server, and a FaultProxy in front of it that loses the reply of
every tenth increment. The library's client reports each loss (each call ran at most once);
a stock redis-py client retries silently and applies some increments twice.
"""

from __future__ import annotations

import redis

import redis_patterns
from redis_patterns import BackendUnavailableError, BoundedCounter, EmbeddedServer
from redis_patterns.testing import FaultProxy

CALLS = 200


def run(client: redis.Redis, proxy: FaultProxy, key: str) -> tuple[int, int]:
    """Increment CALLS times while replies get lost; return (client errors, dropped replies)."""
    counter = BoundedCounter(client, key, limit=10**9)
    counter.incr()  # warm up: the script cached, the connection open
    before = proxy.stats.dropped_replies
    proxy.drop_replies(0.1, match="EVALSHA")
    errors = 0
    for _ in range(CALLS):
        try:
            counter.incr()
        except BackendUnavailableError:
            errors += 1  # the outcome is unknown to us; here we know it ran
    proxy.pass_through()
    return errors, proxy.stats.dropped_replies - before


def main() -> int:
    with EmbeddedServer() as server, FaultProxy(server, seed=13) as proxy:
        with redis_patterns.connect(proxy.url, socket_timeout=5) as ours:
            errors, lost = run(ours, proxy, "demo:ours")
        with redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5) as stock:
            stock_errors, stock_lost = run(stock, proxy, "demo:stock")
        with server.client() as direct:
            ours_value = int(direct.get("demo:ours") or 0) - 1
            stock_value = int(direct.get("demo:stock") or 0) - 1
    print(f"redis_patterns.connect: {CALLS} calls, {lost} replies lost, {errors} errors")
    print(f"    counter moved by {ours_value} (each call ran exactly once)")
    print(f"stock redis.Redis: {CALLS} calls, {stock_lost} replies lost, {stock_errors} errors")
    print(f"    counter moved by {stock_value} ({stock_value - CALLS} increments applied twice)")
    ok = ours_value == CALLS and errors == lost and stock_value == CALLS + stock_lost
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
