"""AsyncLeaderboard: ranks, pages and neighbourhoods on a sorted set, one round trip each."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .._core.leaderboard import (
    Entry,
    LeaderboardCore,
    Only,
    Page,
    Period,
    Ties,
    TimedLeaderboardCore,
)
from .._runner import AsyncClient, AsyncRunner
from .._validate import Duration

__all__ = ["AsyncLeaderboard", "AsyncTimedLeaderboard"]


class AsyncLeaderboard:
    """A leaderboard: members with scores, highest score ranked first (rank 1).

    Every operation is one command or one script (one round trip). Ties are ranked by
    ``ties``: ``"ordinal"`` gives every member its own rank, equal scores in Redis's order
    (member bytes descending, as ``ZREVRANGE`` returns them); ``"competition"`` gives equal
    scores the same rank and skips the next ones (1, 2, 2, 4); ``"earliest"`` ranks, among
    equal scores, the member who reached the score first (integer scores within ±(2**21 - 1),
    stamped with a per-board sequence number). Each policy is applied the same way by `rank`,
    `top`, `page` and `around`.

    Scores are doubles, as Redis stores them: NaN and ±inf are refused, and so are ints beyond
    ±2**53, which a double cannot hold exactly.

    Args:
        client: a redis-py client (standalone or cluster).
        name: the board's name; its key is ``{leaderboard:<name>}``.
        ties: ``"ordinal"`` (default), ``"competition"`` or ``"earliest"``.

    Raises:
        ConfigurationError: a bad ``name`` or ``ties`` (before any I/O).
        TypeError: a sync client given to this asyncio class.
    """

    def __init__(self, client: AsyncClient, name: str | bytes, *, ties: Ties = "ordinal") -> None:
        self._core = LeaderboardCore(name, ties)
        self._runner = AsyncRunner(client)

    @classmethod
    def _view(cls, runner: AsyncRunner, core: LeaderboardCore) -> AsyncLeaderboard:
        board = cls.__new__(cls)
        board._core, board._runner = core, runner
        return board

    @property
    def key(self) -> bytes:
        """The sorted set's key, ``{leaderboard:<name>}``."""
        return self._core.key

    @property
    def ties(self) -> str:
        """The tie policy: ``"ordinal"`` or ``"competition"``."""
        return self._core.ties

    async def add(self, member: str | bytes, score: float, *, only: Only = None) -> bool:
        """Set ``member``'s score (``ZADD``), adding the member if new.

        Args:
            member: the member (non-empty str or bytes).
            score: a finite number.
            only: ``"higher"`` updates only to a higher score (``GT``), ``"lower"`` only to a
                lower one (``LT``); new members are always added.

        Returns:
            Whether the board changed (member added or its score updated).

        Raises:
            ConfigurationError: empty member, NaN/±inf score, int beyond ±2**53, bad ``only``.
        """
        return await self._runner.run(self._core.add(member, score, only))

    async def add_many(
        self, mapping: Mapping[str, float] | Mapping[bytes, float], *, only: Only = None
    ) -> int:
        """Set many scores: one ``ZADD`` per 1,000 members (chunks are not atomic together).

        Returns:
            How many members were added or changed.

        Raises:
            ConfigurationError: any bad member or score (checked before anything is written).
        """
        return await self._runner.run(self._core.add_many(mapping, only))

    async def incr(self, member: str | bytes, amount: float) -> float:
        """Add ``amount`` to ``member``'s score atomically (``ZINCRBY``); returns the new score.

        Raises:
            ConfigurationError: empty member, NaN/±inf amount, int beyond ±2**53.
        """
        return await self._runner.run(self._core.incr(member, amount))

    async def score(self, member: str | bytes) -> float | None:
        """``member``'s score, or ``None`` if it is not on the board."""
        return await self._runner.run(self._core.score(member))

    async def rank(self, member: str | bytes) -> int | None:
        """``member``'s 1-based rank (highest score first) under the tie policy, or ``None``."""
        return await self._runner.run(self._core.rank(member))

    async def top(self, n: int = 10) -> list[Entry]:
        """The ``n`` best entries (1 <= n <= 1000).

        Raises:
            ConfigurationError: ``n`` out of range (before any I/O).
        """
        return await self._runner.run(self._core.top(n))

    async def page(self, number: int, size: int = 10) -> Page:
        """Page ``number`` (1-based) of ``size`` entries (1 <= size <= 1000), with the total.

        Raises:
            ConfigurationError: ``number`` < 1 or ``size`` out of range (before any I/O).
        """
        return await self._runner.run(self._core.page(number, size))

    async def around(self, member: str | bytes, radius: int = 5) -> list[Entry]:
        """``member`` and up to ``radius`` entries on each side, in one script.

        Clipped at the edges: near the top there are fewer entries above. Empty when the
        member is not on the board.

        Raises:
            ConfigurationError: empty member, ``radius`` < 0 or > 500 (before any I/O).
        """
        return await self._runner.run(self._core.around(member, radius))

    async def count(self) -> int:
        """How many members the board has."""
        return await self._runner.run(self._core.count())

    async def remove(self, *members: str | bytes) -> int:
        """Remove members; returns how many were on the board.

        Raises:
            ConfigurationError: no member given, or an empty one (before any I/O).
        """
        return await self._runner.run(self._core.remove(members))

    async def clear(self) -> None:
        """Delete the whole board."""
        await self._runner.run(self._core.clear())


class AsyncTimedLeaderboard:
    """Boards per day, week or month that expire on their own, and a combined view.

    Each period has its own sorted set, ``{leaderboard:<name>}:day:2026-11-26`` (weeks are ISO
    weeks, ``week:2026-W48``; months ``month:2026-11``; boundaries at UTC midnight, taken from
    this machine's clock or the ``at`` you pass). Every write sets the period board's expiry in
    the same script, so it disappears ``keep`` periods after its period has ended; a write to a
    period already past that, by the server's clock, raises `PeriodExpiredError` and stores
    nothing.

    Args:
        client: a redis-py client (standalone or cluster: all periods share one hash tag).
        name: the board's name.
        period: ``"day"``, ``"week"`` or ``"month"``.
        keep: how many ended periods to retain (>= 1); `combined` can span ``keep + 1``.
        ties: ``"ordinal"`` or ``"competition"`` for the boards it returns (see
            `AsyncLeaderboard`; ``"earliest"`` is not supported here).

    Raises:
        ConfigurationError: a bad name, period, keep or ties (before any I/O).
    """

    def __init__(
        self,
        client: AsyncClient,
        name: str | bytes,
        *,
        period: Period = "day",
        keep: int = 7,
        ties: Ties = "ordinal",
    ) -> None:
        self._core = TimedLeaderboardCore(name, period, keep, ties)
        self._runner = AsyncRunner(client)

    async def add(
        self,
        member: str | bytes,
        score: float,
        *,
        only: Only = None,
        at: datetime | None = None,
    ) -> bool:
        """`AsyncLeaderboard.add` on the board of the period containing ``at`` (default now).

        ``at`` may lie in the future: that board then expires ``keep`` periods after *its* end.

        Raises:
            PeriodExpiredError: ``at``'s period is past its retention by the server's clock
                (its board already expired); nothing was written.
        """
        return await self._runner.run(self._core.add(member, score, only, at))

    async def incr(
        self,
        member: str | bytes,
        amount: float,
        *,
        at: datetime | None = None,
    ) -> float:
        """`AsyncLeaderboard.incr` on the board of the period containing ``at`` (default now).

        Raises:
            PeriodExpiredError: as for `add`; nothing was written.
        """
        return await self._runner.run(self._core.incr(member, amount, at))

    def board(self, at: datetime | None = None) -> AsyncLeaderboard:
        """The board of the period containing ``at`` (default now), for reading.

        Write through `add` / `incr` of this object, which keep the expiry set.
        """
        return AsyncLeaderboard._view(self._runner, self._core.board(at))

    async def combined(
        self,
        last: int = 7,
        *,
        at: datetime | None = None,
        cache: Duration = 60.0,
        rebuild: bool = False,
    ) -> AsyncLeaderboard:
        """The sum of the last ``last`` periods' boards (ending with ``at``'s), for reading.

        Built with ``ZUNIONSTORE`` into a snapshot key that is kept ``cache`` seconds and
        reused by every caller meanwhile (one script either way); scores added since the
        snapshot appear when it is rebuilt (``rebuild=True`` forces it). Read the returned
        board right away: after ``cache`` seconds the snapshot is gone until rebuilt.

        Raises:
            ConfigurationError: ``last`` < 1 or beyond ``keep + 1``, a bad ``cache``.
        """
        core = await self._runner.run(self._core.combined(last, at, cache, rebuild))
        return AsyncLeaderboard._view(self._runner, core)
