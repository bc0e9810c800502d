"""A reply lost after the server ran the command: what the library does, and redis-py's retries.

Runs as-is: an embedded Valkey server, and a FaultProxy in front of it that loses the reply of
every tenth increment. The library reports each loss (each call ran at most once), on its own
client and on a stock redis-py client alike; the stock client's own ``INCR`` retries silently
and applies some increments twice.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

import redis_patterns
from redis_patterns import BackendUnavailableError, BoundedCounter, EmbeddedServer
from redis_patterns.testing import FaultProxy

CALLS = 200


def run(incr: Callable[[], object], proxy: FaultProxy, match: str) -> tuple[int, int]:
    """Call ``incr`` CALLS times while replies get lost; return (errors, dropped replies)."""
    incr()  # warm up: the script cached, the connection open
    before = proxy.stats.dropped_replies
    proxy.drop_replies(0.1, match=match)
    errors = 0
    for _ in range(CALLS):
        try:
            incr()
        except (BackendUnavailableError, redis.ConnectionError):
            errors += 1  # the outcome is unknown to us; here we know it ran
    proxy.pass_through()
    return errors, proxy.stats.dropped_replies - before


def main() -> int:
    with EmbeddedServer() as server, FaultProxy(server, seed=13) as proxy:
        with redis_patterns.connect(proxy.url, socket_timeout=5) as ours:
            counter = BoundedCounter(ours, "demo:ours", limit=10**9)
            results = {"ours": run(counter.incr, proxy, "EVALSHA")}
        with redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5) as stock:
            counter = BoundedCounter(stock, "demo:pattern", limit=10**9)  # warns: it re-sends
            results["pattern"] = run(counter.incr, proxy, "EVALSHA")
            results["stock"] = run(lambda: stock.incr("demo:stock"), proxy, "INCR")
        with server.client() as direct:
            moved = {name: int(direct.get(f"demo:{name}") or 0) - 1 for name in results}
    for name, title in (
        ("ours", "BoundedCounter on redis_patterns.connect"),
        ("pattern", "BoundedCounter on a stock redis.Redis"),
        ("stock", "the stock redis.Redis's own INCR"),
    ):
        errors, lost = results[name]
        print(f"{title}: {CALLS} calls, {lost} replies lost, {errors} errors")
        twice = moved[name] - CALLS
        print(f"    counter moved by {moved[name]} ({twice} increments applied twice)")
    ok = all(
        moved[name] == CALLS and results[name][0] == results[name][1]
        for name in ("ours", "pattern")
    )
    ok = ok and moved["stock"] == CALLS + results["stock"][1] and results["stock"][0] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
