"""AsyncLock: 50 tasks doing a racy read-modify-write, made exact by the lock."""

from __future__ import annotations

import asyncio

from redis_patterns import AsyncLock, connect


async def main() -> None:
    client = connect(asyncio=True)
    await client.delete("examples:counter")

    async def increment() -> None:
        # One lock object per holder: ownership belongs to the object, not to a task/thread.
        async with AsyncLock(client, "examples:counter", ttl=5, timeout=30):
            value = int(await client.get("examples:counter") or 0)
            await asyncio.sleep(0)  # other tasks run here, but cannot enter
            await client.set("examples:counter", value + 1)

    await asyncio.gather(*(increment() for _ in range(50)))
    print("counter:", int(await client.get("examples:counter") or 0))  # always 50
    await client.delete("examples:counter")
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
