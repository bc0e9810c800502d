"""Script basics: run Lua with EVALSHA, survive SCRIPT FLUSH, catch the script's own errors."""

from __future__ import annotations

import asyncio

import redis_patterns
from redis_patterns import Script, ScriptError

# The seed's atomic check-and-increment: read, decide and write inside the server.
INCR_BELOW = Script(
    """
    -- KEYS[1] counter
    -- ARGV[1] limit
    -- returns the new value, or -1 when the limit is reached
    local limit = tonumber(ARGV[1])
    local current = tonumber(redis.call('GET', KEYS[1]) or '0')
    if current >= limit then
      return -1
    end
    return redis.call('INCR', KEYS[1])
    """
)
FAIL = Script("return redis.error_reply('ERR out of stock: sku 42')")


def main() -> None:
    client = redis_patterns.connect()
    client.set("stock:sold", 98)
    print([INCR_BELOW(client, keys=["stock:sold"], args=[100]) for _ in range(3)])  # 99 100 -1
    client.script_flush()  # e.g. a restart or failover emptied the script cache
    print("after SCRIPT FLUSH:", INCR_BELOW(client, keys=["stock:sold"], args=[101]))  # 101
    try:
        FAIL(client, keys=["stock:sold"])
    except ScriptError as exc:
        print("ScriptError:", exc)  # carries the Lua message
    asyncio.run(run_async())


async def run_async() -> None:
    client = redis_patterns.connect(asyncio=True)
    print("async:", await INCR_BELOW(client, keys=["stock:sold"], args=[200]))  # 102
    await client.aclose()


if __name__ == "__main__":
    main()
