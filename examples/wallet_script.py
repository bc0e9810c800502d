"""The seed's wallet transfer as one Lua script: balance check and move in one round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis_patterns
from redis_patterns import Script

# The script lives in its own file next to this one; Script computes its SHA locally and sends
# EVALSHA, loading the source only when the server does not have it yet.
TRANSFER = Script.from_file(Path(__file__).with_name("wallet_transfer.lua"))


def wallet(name: str) -> str:
    """A wallet's key: the shared ``{wallet}`` hash tag keeps every wallet in one cluster slot."""
    return f"{{wallet}}:{name}"


def _check(source: str, target: str, amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive int, got {amount!r}")
    if source == target:
        raise ValueError("source and target must differ")


def transfer(client: Any, source: str, target: str, amount: int) -> int | None:
    """Move ``amount`` from ``source`` to ``target``; the source's new balance, or None if short."""
    _check(source, target, amount)
    reply = TRANSFER(client, keys=[wallet(source), wallet(target)], args=[amount])
    return None if reply is None else int(reply)


async def transfer_async(client: Any, source: str, target: str, amount: int) -> int | None:
    """`transfer` for an asyncio client."""
    _check(source, target, amount)
    reply = await TRANSFER(client, keys=[wallet(source), wallet(target)], args=[amount])
    return None if reply is None else int(reply)


def main() -> None:
    client = redis_patterns.connect()
    client.delete(wallet("alice"), wallet("bob"))
    client.set(wallet("alice"), 500)
    print("alice -> bob 100:", transfer(client, "alice", "bob", 100))  # 400
    print("alice -> bob 1000:", transfer(client, "alice", "bob", 1000))  # None: refused
    balances = [int(v or 0) for v in client.mget(wallet("alice"), wallet("bob"))]
    print("balances:", balances)
    assert balances == [400, 100]


if __name__ == "__main__":
    main()
