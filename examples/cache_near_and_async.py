"""An AsyncCache with a near cache (local=N): hits cost no round trip; writes invalidate it."""

from __future__ import annotations

import asyncio

import redis_patterns
from redis_patterns import AsyncCache


async def main() -> None:
    client = redis_patterns.connect(asyncio=True)
    async with AsyncCache(client, "example.prices", ttl=60, local=1000) as cache:

        async def load_price() -> float:
            await asyncio.sleep(0.05)
            return 9.99

        # 20 concurrent requests for a cold key: the loader runs once.
        prices = await asyncio.gather(*(cache.get_or_load("sku:1", load_price) for _ in range(20)))
        assert set(prices) == {9.99}
        for _ in range(100):
            if cache.local_ready:  # the invalidation subscription is up
                break
            await asyncio.sleep(0.01)
        await cache.get("sku:1")  # kept in the near cache from now on
        for _ in range(1000):
            await cache.get("sku:1")  # no round trip
        await cache.set("sku:1", 10.49)  # publishes an invalidation to every process
        assert await cache.get("sku:1") == 10.49
        print(f"near-cache stats: {cache.stats}")
    await client.aclose()


asyncio.run(main())
