"""Leaderboard basics: the seed's five players, ranks, pages, neighbourhoods and fair ties."""

from __future__ import annotations

import asyncio

import redis_patterns
from redis_patterns import AsyncLeaderboard, Leaderboard


def main() -> None:
    client = redis_patterns.connect()
    board = Leaderboard(client, "game:season-1")
    board.clear()
    board.add_many({"alice": 1500, "bob": 2300, "charlie": 1800, "diana": 3100, "eve": 2750})

    for entry in board.top(5):  # Entry(rank, member, score), highest first
        print(f"#{entry.rank} {entry.member} {entry.score:g}")
    print("bob is", board.rank("bob"))  # 3 (1-based)
    print("alice +200 ->", board.incr("alice", 200))  # 1700.0
    print("GT 1000 changed:", board.add("alice", 1000, only="higher"))  # False
    page = board.page(2, 2)
    print(f"page {page.number}/{page.pages}:", [e.member for e in page.entries])  # bob, charlie
    print("around charlie:", [(e.rank, e.member) for e in board.around("charlie", 1)])

    fair = Leaderboard(client, "game:fair", ties="competition")
    fair.clear()
    fair.add_many({"ann": 90, "ben": 80, "cat": 80, "dan": 70})
    ranks = [(e.rank, e.member) for e in fair.top(4)]
    print("competition ranks:", ranks)  # 1, 2, 2, 4
    assert [r for r, _ in ranks] == [1, 2, 2, 4]
    asyncio.run(run_async())


async def run_async() -> None:
    client = redis_patterns.connect(asyncio=True)
    board = AsyncLeaderboard(client, "game:season-1")
    print("async rank of diana:", await board.rank("diana"))  # 1
    await client.aclose()


if __name__ == "__main__":
    main()
