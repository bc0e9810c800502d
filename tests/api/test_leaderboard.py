"""Leaderboard on real servers: a model-checked state machine, counted commands, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from redis_patterns import AsyncLeaderboard, ConfigurationError, Entry, Leaderboard, Page
from redis_patterns.testing.pytest_plugin import Backend

_boards = itertools.count()

# A few members and scores, so ties are the rule rather than the exception. Halves keep every
# sum exact, so the model's float arithmetic matches the server's.
MEMBERS = ["a", "b", "c", "ab", "B", "é", "zz", "m"]
SCORES = st.sampled_from([-2, -1, 0, 0.5, 1, 1.5, 2, 3, 10])
INT_SCORES = st.sampled_from([-2, -1, 0, 1, 2, 3, 10])


class Model:
    """The plain Python leaderboard the real one must agree with."""

    def __init__(self, ties: str) -> None:
        self.scores: dict[str, float] = {}
        self.stamps: dict[str, int] = {}  # ties="earliest": when each score was reached
        self.sequence = 0
        self.ties = ties

    def set(self, member: str, score: float) -> None:
        if member not in self.scores or self.scores[member] != score:
            self.sequence += 1
            self.stamps[member] = self.sequence
        self.scores[member] = score

    def ordered(self) -> list[tuple[str, float]]:
        if self.ties == "earliest":  # score descending, then who reached it first
            return sorted(self.scores.items(), key=lambda kv: (-kv[1], self.stamps[kv[0]]))
        # Redis's reverse order: score descending, equal scores by member bytes descending.
        return sorted(self.scores.items(), key=lambda kv: (kv[1], kv[0].encode()), reverse=True)

    def entries(self) -> list[Entry]:
        out = []
        for position, (member, score) in enumerate(self.ordered()):
            if self.ties == "competition":
                rank = 1 + sum(1 for s in self.scores.values() if s > score)
            else:
                rank = position + 1
            out.append(Entry(rank, member, float(score)))
        return out

    def rank(self, member: str) -> int | None:
        return next((e.rank for e in self.entries() if e.member == member), None)

    def around(self, member: str, radius: int) -> list[Entry]:
        entries = self.entries()
        for position, entry in enumerate(entries):
            if entry.member == member:
                return entries[max(0, position - radius) : position + radius + 1]
        return []


def _state_machine(client: Any, ties: str) -> type[RuleBasedStateMachine]:
    scores = INT_SCORES if ties == "earliest" else SCORES
    amounts = [-1, 1, 2, 0] if ties == "earliest" else [-1, 0.5, 1, 2]

    class LeaderboardMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.board = Leaderboard(client, f"model-{ties}-{next(_boards)}", ties=ties)  # type: ignore[arg-type]
            self.board.clear()
            self.model = Model(ties)

        @rule(
            member=st.sampled_from(MEMBERS),
            score=scores,
            only=st.sampled_from([None, "higher", "lower"]),
        )
        def add(self, member: str, score: float, only: Any) -> None:
            old = self.model.scores.get(member)
            new = score
            if old is not None and only == "higher":
                new = max(old, score)
            elif old is not None and only == "lower":
                new = min(old, score)
            assert self.board.add(member, score, only=only) == (old != new)
            self.model.set(member, new)

        @rule(member=st.sampled_from(MEMBERS), amount=st.sampled_from(amounts))
        def incr(self, member: str, amount: float) -> None:
            self.model.set(member, self.model.scores.get(member, 0) + amount)
            assert self.board.incr(member, amount) == self.model.scores[member]

        @rule(members=st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3))
        def remove(self, members: list[str]) -> None:
            present = {m for m in members if m in self.model.scores}
            assert self.board.remove(*members) == len(present)
            for member in present:
                del self.model.scores[member]
                self.model.stamps.pop(member, None)

        @rule(member=st.sampled_from(MEMBERS))
        def rank_and_score(self, member: str) -> None:
            assert self.board.rank(member) == self.model.rank(member)
            expected = self.model.scores.get(member)
            assert self.board.score(member) == (None if expected is None else float(expected))

        @rule(n=st.integers(1, 10))
        def top(self, n: int) -> None:
            assert self.board.top(n) == self.model.entries()[:n]

        @rule(number=st.integers(1, 5), size=st.integers(1, 4))
        def page(self, number: int, size: int) -> None:
            entries = self.model.entries()
            expected = Page(
                tuple(entries[(number - 1) * size : number * size]),
                number,
                size,
                len(entries),
                -(-len(entries) // size),
            )
            assert self.board.page(number, size) == expected

        @rule(member=st.sampled_from(MEMBERS), radius=st.integers(0, 3))
        def around(self, member: str, radius: int) -> None:
            assert self.board.around(member, radius) == self.model.around(member, radius)

        @rule()
        def count(self) -> None:
            assert self.board.count() == len(self.model.scores)

        def teardown(self) -> None:
            self.board.clear()

    return LeaderboardMachine


@pytest.mark.fault  # RELIABILITY scenario 25: 500 x 50 steps under --soak
@pytest.mark.parametrize("ties", ["ordinal", "competition", "earliest"])
def test_model_based(
    backend: Backend, ties: str, scale: Callable[[int, int], int], request: pytest.FixtureRequest
) -> None:
    machine = _state_machine(backend.client(), ties)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=scale(30, 500),
            stateful_step_count=scale(30, 50),
            deadline=None,
            database=None,
        ),
    )


def test_seed_example(client: Any, prefix: str) -> None:
    board = Leaderboard(client, prefix)
    board.add_many({"alice": 1500, "bob": 2300, "charlie": 1800, "diana": 3100, "eve": 2750})
    assert [(e.member, e.score) for e in board.top(5)] == [
        ("diana", 3100.0),
        ("eve", 2750.0),
        ("bob", 2300.0),
        ("charlie", 1800.0),
        ("alice", 1500.0),
    ]
    assert board.rank("bob") == 3
    assert board.score("bob") == 2300.0
    assert board.count() == 5
    assert board.incr("alice", 200) == 1700.0
    assert board.add("alice", 5000) is True
    assert board.add("alice", 4000, only="higher") is False
    assert board.add("alice", 6000, only="higher") is True
    assert board.score("alice") == 6000.0
    assert board.add("alice", 7000, only="lower") is False
    assert board.rank("nobody") is None
    assert board.score("nobody") is None
    assert board.around("nobody", 3) == []


def test_competition_ranks_share_and_skip(client: Any, prefix: str) -> None:
    board = Leaderboard(client, prefix, ties="competition")
    board.add_many({"w": 10, "x": 7, "y": 7, "z": 3})
    assert [e.rank for e in board.top(4)] == [1, 2, 2, 4]
    assert [board.rank(m) for m in "wxyz"] == [1, 2, 2, 4]
    assert [e.rank for e in board.page(2, 2).entries] == [2, 4]  # page starts mid-tie
    assert [e.rank for e in board.around("z", 1)] == [2, 4]


def test_around_is_clipped_at_the_edges(client: Any, prefix: str) -> None:
    board = Leaderboard(client, prefix)
    board.add_many({f"p{i:02}": i for i in range(20)})
    assert [e.rank for e in board.around("p19", 3)] == [1, 2, 3, 4]
    assert [e.rank for e in board.around("p00", 3)] == [17, 18, 19, 20]
    assert [e.member for e in board.around("p10", 1)] == ["p11", "p10", "p09"]
    assert [e.member for e in board.around("p10", 0)] == ["p10"]


def test_page_metadata(client: Any, prefix: str) -> None:
    board = Leaderboard(client, prefix)
    assert board.page(1, 10) == Page((), 1, 10, 0, 0)
    board.add_many({f"p{i:02}": i for i in range(25)})
    page = board.page(3, 10)
    assert (page.total, page.pages, len(page.entries), page.entries[0].rank) == (25, 3, 5, 21)
    assert board.page(4, 10).entries == ()


def test_add_many_chunks_and_counts(backend: Backend, prefix: str) -> None:
    board = Leaderboard(backend.client(), prefix)
    mapping = {f"m{i}": i for i in range(2500)}
    with backend.counter() as seen:
        assert board.add_many(mapping) == 2500
    assert seen.names == ["ZADD", "ZADD", "ZADD"]  # 1,000 members per command
    assert board.count() == 2500
    assert board.add_many({}) == 0
    assert board.add_many({"m1": 5, "m2": 0}, only="higher") == 1


@pytest.mark.parametrize("ties", ["ordinal", "competition"])
def test_commands_per_operation(backend: Backend, prefix: str, ties: Any) -> None:
    board = Leaderboard(backend.client(), prefix, ties=ties)
    board.add_many({"a": 3, "b": 2, "c": 2, "d": 1})
    board.rank("b")
    board.around("b", 1)
    board.page(1, 2)  # every script is cached now
    expected = {
        "rank": ["EVALSHA"] if ties == "competition" else ["ZREVRANK"],
        "around": ["EVALSHA"],
        "page": ["EVALSHA"],
        "top": ["ZREVRANGE"],
        "add": ["ZADD"],
        "incr": ["ZINCRBY"],
        "score": ["ZSCORE"],
        "count": ["ZCARD"],
    }
    calls: dict[str, Callable[[], object]] = {
        "rank": lambda: board.rank("c"),
        "around": lambda: board.around("c", 2),
        "page": lambda: board.page(2, 2),
        "top": lambda: board.top(3),
        "add": lambda: board.add("e", 5, only="higher"),
        "incr": lambda: board.incr("e", 1),
        "score": lambda: board.score("e"),
        "count": board.count,
    }
    for name, call in calls.items():
        with backend.counter() as seen:
            call()
        assert seen.names == expected[name], name


async def test_async_board(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    board = AsyncLeaderboard(client, prefix, ties="competition")
    await board.add_many({"w": 10, "x": 7, "y": 7, "z": 3})
    assert [e.rank for e in await board.top(4)] == [1, 2, 2, 4]
    assert await board.rank("y") == 2
    assert [e.member for e in await board.around("x", 1)] == ["y", "x", "z"]
    assert (await board.page(1, 3)).pages == 2
    assert await board.incr("z", 0.5) == 3.5
    assert await board.remove("z") == 1
    assert await board.count() == 3
    with backend.counter() as seen:
        await board.around("x", 1)
    assert seen.names == ["EVALSHA"]
    await client.aclose()


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.add("m", NAN),
        lambda b: b.add("m", INF),
        lambda b: b.add("m", -INF),
        lambda b: b.add("m", 2**53 + 1),
        lambda b: b.add("m", -(2**53) - 1),
        lambda b: b.add("m", True),
        lambda b: b.add("m", "10"),
        lambda b: b.add("", 1),
        lambda b: b.add(None, 1),
        lambda b: b.add(5, 1),
        lambda b: b.add("m", 1, only="up"),
        lambda b: b.add_many({"ok": 1, "bad": NAN}),
        lambda b: b.add_many([("a", 1)]),
        lambda b: b.incr("m", NAN),
        lambda b: b.incr("m", INF),
        lambda b: b.incr("", 1),
        lambda b: b.page(0, 10),
        lambda b: b.page(-1, 10),
        lambda b: b.page(1, 0),
        lambda b: b.page(1, 1001),
        lambda b: b.page(1.5, 10),
        lambda b: b.top(0),
        lambda b: b.top(1001),
        lambda b: b.around("m", -1),
        lambda b: b.around("m", 501),
        lambda b: b.around("", 1),
        lambda b: b.rank(""),
        lambda b: b.score(b""),
        lambda b: b.remove(),
        lambda b: b.remove("a", ""),
    ],
)
def test_bad_input_fails_before_any_io(backend: Backend, call: Any) -> None:
    client = backend.client()
    client.ping()
    board = Leaderboard(client, "bad-input")
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        call(board)
    assert seen.count == 0


@pytest.mark.parametrize(
    ("name", "ties"), [("", "ordinal"), ("a{b}", "ordinal"), ("ok", "dense"), (None, "ordinal")]
)
def test_bad_construction(client: Any, name: Any, ties: Any) -> None:
    with pytest.raises(ConfigurationError):
        Leaderboard(client, name, ties=ties)


@pytest.mark.fault  # RELIABILITY scenario 27: 100,000 cases under --soak
def test_large_exact_scores_round_trip(client: Any, prefix: str, scale: Any) -> None:
    # Scenario 27: ints up to 2**53 and arbitrary finite doubles come back exactly.
    rng = random.Random(27)
    cases = scale(2_000, 100_000)
    scores: dict[str, float] = {}
    for i in range(cases):
        kind = i % 3
        if kind == 0:
            scores[f"m{i}"] = rng.randint(-(2**53), 2**53)
        elif kind == 1:
            scores[f"m{i}"] = rng.uniform(-1e300, 1e300)
        else:
            scores[f"m{i}"] = rng.random() * 10 ** rng.randint(-300, 300)
    scores["edge+"], scores["edge-"] = 2**53, -(2**53)
    board = Leaderboard(client, prefix)
    board.add_many(scores)
    back = {}
    for number in range(1, board.page(1, 1000).pages + 1):
        back.update({e.member: e.score for e in board.page(number, 1000).entries})
    assert back == {m: float(s) for m, s in scores.items()}


# -- scenario 26 and the concurrency promises ---------------------------------------------------


@pytest.mark.fault
def test_concurrent_incr_loses_nothing(backend: Backend, prefix: str, scale: Any) -> None:
    workers, each = 8, scale(300, 10_000)
    members = ["p0", "p1", "p2"]
    barrier = threading.Barrier(workers)
    sums = [dict.fromkeys(members, 0) for _ in range(workers)]

    def work(index: int) -> None:
        board = Leaderboard(backend.client(), prefix)
        rng = random.Random(index)
        barrier.wait()
        for _ in range(each):
            member, amount = rng.choice(members), rng.randint(-5, 10)
            board.incr(member, amount)
            sums[index][member] += amount

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    board = Leaderboard(backend.client(), prefix)
    for member in members:
        assert board.score(member) == sum(s[member] for s in sums)


@pytest.mark.fault
async def test_async_concurrent_incr_loses_nothing(
    backend: Backend, prefix: str, scale: Any
) -> None:
    client = backend.async_client()
    board = AsyncLeaderboard(client, prefix)
    await board.count()  # redis-py's async cluster client initializes on first use: not racing
    tasks, each = 50, scale(20, 400)

    async def work() -> list[float]:
        return [await board.incr("p", 1) for _ in range(each)]

    results = [r for rs in await asyncio.gather(*(work() for _ in range(tasks))) for r in rs]
    # Every increment saw a distinct predecessor: none was lost or applied twice.
    assert sorted(results) == [float(i) for i in range(1, tasks * each + 1)]
    assert await board.score("p") == tasks * each
    await client.aclose()


@pytest.mark.fault
def test_only_higher_never_lowers_under_sixteen_writers(
    backend: Backend, prefix: str, scale: Any
) -> None:
    writers, each = 16, scale(100, 2_000)
    members = ["a", "b"]
    barrier = threading.Barrier(writers + 1)
    best = [dict.fromkeys(members, -1) for _ in range(writers)]
    stop = threading.Event()
    lowered: list[tuple[str, float, float]] = []

    def write(index: int) -> None:
        board = Leaderboard(backend.client(), prefix)
        rng = random.Random(index)
        barrier.wait()
        for _ in range(each):
            member, score = rng.choice(members), rng.randint(0, 100_000)
            board.add(member, score, only="higher")
            best[index][member] = max(best[index][member], score)

    def observe() -> None:
        board = Leaderboard(backend.client(), prefix)
        seen = dict.fromkeys(members, -1.0)
        barrier.wait()
        for _ in range(1_000_000):
            if stop.is_set():
                return
            for member in members:
                score = board.score(member)
                if score is not None:
                    if score < seen[member]:
                        lowered.append((member, seen[member], score))
                    seen[member] = score

    observer = threading.Thread(target=observe)
    observer.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    stop.set()
    observer.join(60)
    board = Leaderboard(backend.client(), prefix)
    assert lowered == []
    for member in members:
        assert board.score(member) == max(b[member] for b in best)


# -- ties="earliest": who reached a score first ranks first ----------------------------------


def test_earliest_achiever_ranks_first(backend: Backend, prefix: str) -> None:
    board = Leaderboard(backend.client(), prefix, ties="earliest")
    assert board.add("zed", 10) is True
    assert board.add("amy", 10) is True  # same score, reached later
    assert board.add("zed", 10) is False  # unchanged: keeps its earlier stamp
    assert [e.member for e in board.top(2)] == ["zed", "amy"]
    assert board.incr("amy", 5) == 15.0
    assert board.incr("zed", 5) == 15.0  # reached 15 after amy
    assert [(e.rank, e.member, e.score) for e in board.top(2)] == [
        (1, "amy", 15.0),
        (2, "zed", 15.0),
    ]
    assert board.score("zed") == 15.0
    assert board.add("zed", 14, only="higher") is False
    assert board.add("zed", 16, only="lower") is False
    board.rank("zed")
    with backend.counter() as seen:
        assert board.add("bob", -3) is True
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert board.rank("bob") == 3
    assert seen.names == ["ZREVRANK"]


@pytest.mark.fault  # RELIABILITY scenario 27: composite scores, 100,000 cases under --soak
def test_earliest_composite_scores_round_trip(client: Any, prefix: str, scale: Any) -> None:
    rng = random.Random(2753)
    cases = scale(3_000, 100_000)
    limit = 2**21 - 1
    scores = {
        f"m{i}": rng.choice([rng.randint(-limit, limit), rng.randint(-3, 3)]) for i in range(cases)
    }
    scores["max"], scores["min"] = limit, -limit
    board = Leaderboard(client, prefix, ties="earliest")
    board.add_many(scores)  # stamped in the mapping's order
    order = {member: i for i, member in enumerate(scores)}
    back: list[Entry] = []
    for number in range(1, board.page(1, 1000).pages + 1):
        back += board.page(number, 1000).entries
    assert {e.member: e.score for e in back} == {m: float(s) for m, s in scores.items()}
    expected = sorted(scores, key=lambda m: (-scores[m], order[m]))
    assert [e.member for e in back] == expected
    assert [e.rank for e in back] == list(range(1, len(scores) + 1))


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.add("m", 1.5),
        lambda b: b.add("m", 2**21),
        lambda b: b.add("m", -(2**21)),
        lambda b: b.incr("m", 0.5),
        lambda b: b.add_many({"a": 1, "b": 2.0}),
    ],
)
def test_earliest_refuses_what_it_cannot_encode(backend: Backend, call: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        call(Leaderboard(client, "bad-earliest", ties="earliest"))
    assert seen.count == 0


def test_earliest_incr_past_the_limit_is_a_script_error(client: Any, prefix: str) -> None:
    from redis_patterns import ScriptError

    board = Leaderboard(client, prefix, ties="earliest")
    board.add("m", 2**21 - 1)
    with pytest.raises(ScriptError, match="beyond"):
        board.incr("m", 1)
    assert board.score("m") == 2**21 - 1
