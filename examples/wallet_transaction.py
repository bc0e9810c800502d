"""The seed's wallet transfer with transaction(): WATCH the source, check, MULTI, move, EXEC."""

from __future__ import annotations

from typing import Any

import redis_patterns
from redis_patterns import TransactionResult, async_transaction, transaction


def wallet(name: str) -> str:
    """A wallet's key: the shared ``{wallet}`` hash tag keeps every wallet in one cluster slot."""
    return f"{{wallet}}:{name}"


def _check(source: str, target: str, amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive int, got {amount!r}")
    if source == target:
        raise ValueError("source and target must differ")


def transfer(
    client: Any, source: str, target: str, amount: int, *, retries: int = 50
) -> TransactionResult[bool]:
    """Move ``amount`` unless the source would go negative; ``.value`` says whether it moved.

    Only the source is watched: the overdraw check reads it, while the target's INCRBY is
    correct whatever the target holds. ``.conflicts`` counts the attempts a concurrent
    change of the source aborted (each was retried from WATCH with a fresh read).
    """
    _check(source, target, amount)
    src, dst = wallet(source), wallet(target)

    def body(pipe: Any) -> bool:
        balance = int(pipe.get(src) or 0)  # runs now, on the connection that WATCHes src
        if balance < amount:
            return False  # no pipe.multi(): nothing is written (the seed's UNWATCH branch)
        pipe.multi()
        pipe.decrby(src, amount)
        pipe.incrby(dst, amount)
        return True

    return transaction(client, body, src, retries=retries)


async def transfer_async(
    client: Any, source: str, target: str, amount: int, *, retries: int = 50
) -> TransactionResult[bool]:
    """`transfer` for an asyncio client."""
    _check(source, target, amount)
    src, dst = wallet(source), wallet(target)

    async def body(pipe: Any) -> bool:
        balance = int(await pipe.get(src) or 0)
        if balance < amount:
            return False
        pipe.multi()
        pipe.decrby(src, amount)
        pipe.incrby(dst, amount)
        return True

    return await async_transaction(client, body, src, retries=retries)


def main() -> None:
    client = redis_patterns.connect()
    client.delete(wallet("alice"), wallet("bob"))
    client.set(wallet("alice"), 500)
    moved = transfer(client, "alice", "bob", 100)
    print("alice -> bob 100:", moved.value, f"({moved.attempts} attempt(s))")  # True
    refused = transfer(client, "alice", "bob", 1000)
    print("alice -> bob 1000:", refused.value, "executed:", refused.executed)  # False, False
    balances = [int(v or 0) for v in client.mget(wallet("alice"), wallet("bob"))]
    print("balances:", balances)
    assert balances == [400, 100]


if __name__ == "__main__":
    main()
