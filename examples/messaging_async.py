"""The asyncio twins: AsyncSubscriber / AsyncPublisher and AsyncStreamQueue / AsyncWorker."""

from __future__ import annotations

import asyncio

from redis_patterns import (
    AsyncPublisher,
    AsyncStreamQueue,
    AsyncSubscriber,
    AsyncWorker,
    StreamMessage,
    connect,
)


async def main() -> None:
    client = connect(asyncio=True)

    async with AsyncSubscriber(client, channels=["alerts"]) as subscriber:
        await AsyncPublisher(client).publish("alerts", "disk almost full")
        message = await subscriber.get(timeout=5)
        assert message is not None
        print(f"{message.channel}: {message.text()}")

    queue = AsyncStreamQueue(client, "thumbnails")
    for n in range(10):
        await queue.add({"image": f"img{n}.png"})
    done: list[str] = []

    async def make_thumbnail(message: StreamMessage) -> None:
        await asyncio.sleep(0.001)  # the real work
        done.append(message.data["image"])
        if len(done) == 10:
            worker.stop()

    worker = AsyncWorker(queue, "thumbnailer-1", make_thumbnail, block=0.1)
    stats = await worker.run()
    print(f"made {len(done)} thumbnails; handled={stats.handled}")
    print(f"pending afterwards: {(await queue.pending()).count}")
    await queue.delete()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
