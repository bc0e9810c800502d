"""Leaderboard's logic on one sorted set: validation, ranks under both tie policies, as plans."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from .._errors import ConfigurationError, ConfigurationTypeError, PeriodExpiredError
from .._keys import check_name, make_key
from .._plan import Command, Plan
from .._script import package_script
from .._validate import check_int, check_number, duration_ms

__all__ = [
    "MAX_EXACT_INT",
    "MAX_PAGE_SIZE",
    "Entry",
    "LeaderboardCore",
    "Page",
    "Period",
    "Ties",
    "TimedLeaderboardCore",
]

Ties = Literal["ordinal", "competition", "earliest"]
Period = Literal["day", "week", "month"]
Only = Literal["higher", "lower"] | None

MAX_EXACT_INT = 2**53  # integers beyond this are not exactly representable as a double score
MAX_PAGE_SIZE = 1000  # bounds every read script (pages, top, neighbourhoods) to O(log N + 1000)
MAX_RADIUS = 500
# ties="earliest": stored = score * 2**31 + (2**31 - 1 - sequence); exact while |stored| < 2**53.
SEQUENCE_SPAN = 2**31
MAX_EARLIEST_SCORE = 2**21 - 1
ADD_MANY_CHUNK = 1000  # members per ZADD in add_many: one command each, no pipeline needed


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of a leaderboard: ``rank`` (1-based, highest score first), member, score."""

    rank: int
    member: str
    score: float


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a leaderboard.

    Attributes:
        entries: the rows on this page (empty past the last page).
        number: the page number (1-based).
        size: the page size asked for.
        total: members on the whole board when the page was read.
        pages: how many pages of ``size`` the board has (0 when it is empty).
    """

    entries: tuple[Entry, ...]
    number: int
    size: int
    total: int
    pages: int


def check_score(value: object, what: str = "score") -> float | int:
    """A finite score; an int must be within ±2**53, where a double still holds it exactly."""
    score = check_number(value, what)  # as given: an int stays an int
    if isinstance(score, int) and abs(score) > MAX_EXACT_INT:
        raise ConfigurationError(
            f"{what} {score} is beyond ±2**53: Redis stores scores as doubles and would round it"
        )
    return score


def check_member(value: object) -> bytes:
    return check_name(value, "member", raw_key=True)


def _only_flags(only: object) -> tuple[str, ...]:
    if only is None:
        return ()
    if only == "higher":
        return ("GT",)
    if only == "lower":
        return ("LT",)
    raise ConfigurationError(f"only must be None, 'higher' or 'lower', got {only!r}")


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """(member, score) pairs from a flat ``[m, s, m, s]`` or a RESP3 ``[[m, s], ...]`` reply."""
    items = list(reply or [])
    if items and isinstance(items[0], list | tuple):
        return [(_text(m), float(s)) for m, s in items]
    return [(_text(items[i]), float(items[i + 1])) for i in range(0, len(items), 2)]


def _ranked(
    start: int, higher: int, pairs: list[tuple[str, float]], competition: bool
) -> list[Entry]:
    """Rank a slice that starts at 0-based position ``start`` of the board.

    Competition ranking: a member's rank is 1 + the members with a strictly higher score, so
    the slice's first entry needs ``higher`` from the server; after it, an entry whose score
    differs from its predecessor's is the first of its score, so its rank is its position.
    """
    entries: list[Entry] = []
    for i, (member, score) in enumerate(pairs):
        if not competition:
            rank = start + i + 1
        elif i == 0:
            rank = higher + 1
        elif score == pairs[i - 1][1]:
            rank = entries[-1].rank
        else:
            rank = start + i + 1
        entries.append(Entry(rank, member, score))
    return entries


def check_earliest_score(value: object, what: str = "score") -> int:
    """ties="earliest" packs an achievement sequence into the score: integers within ±(2**21-1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationTypeError(
            f"{what} must be an int with ties='earliest' (got {type(value).__name__})"
        )
    if abs(value) > MAX_EARLIEST_SCORE:
        raise ConfigurationError(
            f"{what} {value} is beyond ±{MAX_EARLIEST_SCORE}, the limit of ties='earliest'"
        )
    return value


def _decode_earliest(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(m, float(math.floor(s / SEQUENCE_SPAN))) for m, s in pairs]


class LeaderboardCore:
    """State and plans shared by `Leaderboard` and `AsyncLeaderboard`."""

    __slots__ = ("competition", "earliest", "key", "name", "sequence_key", "ties")

    def __init__(self, name: str | bytes, ties: str, suffix: str | None = None) -> None:
        self.name = check_name(name)
        if ties not in ("ordinal", "competition", "earliest"):
            raise ConfigurationError(
                f"ties must be 'ordinal', 'competition' or 'earliest', got {ties!r}"
            )
        self.ties = ties
        self.competition = ties == "competition"
        self.earliest = ties == "earliest"
        self.key = make_key("leaderboard", self.name, suffix)
        self.sequence_key = make_key("leaderboard", self.name, f"{suffix}:seq" if suffix else "seq")

    def _pairs(self, reply: Any) -> list[tuple[str, float]]:
        pairs = _pairs(reply)
        return _decode_earliest(pairs) if self.earliest else pairs

    def add(self, member: object, score: object, only: object) -> Plan[bool]:
        flags = _only_flags(only)
        if self.earliest:
            pair = (check_member(member), check_earliest_score(score))
            return bool((yield from self._earliest_add(flags, list(pair))))
        args = ("ZADD", self.key, *flags, "CH", check_score(score), check_member(member))
        return bool((yield Command(args)))

    def _earliest_add(self, flags: tuple[str, ...], pairs: list[Any]) -> Plan[int]:
        script = package_script("leaderboard_earliest_add")
        condition = flags[0] if flags else ""
        reply = yield script.eval((self.key, self.sequence_key), (condition, *pairs))
        return int(reply)

    def add_many(self, mapping: object, only: object) -> Plan[int]:
        flags = _only_flags(only)
        if not isinstance(mapping, Mapping):
            raise ConfigurationTypeError(f"mapping must be a mapping, not {type(mapping).__name__}")
        flat: list[Any] = []
        for member, score in mapping.items():  # validate everything before the first write
            if self.earliest:
                flat += [check_member(member), check_earliest_score(score, f"score of {member!r}")]
            else:
                flat += [check_score(score, f"score of {member!r}"), check_member(member)]
        changed = 0
        for i in range(0, len(flat), 2 * ADD_MANY_CHUNK):
            chunk = flat[i : i + 2 * ADD_MANY_CHUNK]
            if self.earliest:
                changed += yield from self._earliest_add(flags, chunk)
            else:
                changed += int((yield Command(("ZADD", self.key, *flags, "CH", *chunk))))
        return changed

    def incr(self, member: object, amount: object) -> Plan[float]:
        if self.earliest:
            raw, step = check_member(member), check_earliest_score(amount, "amount")
            script = package_script("leaderboard_earliest_incr")
            return float((yield script.eval((self.key, self.sequence_key), (raw, step))))
        args = ("ZINCRBY", self.key, check_score(amount, "amount"), check_member(member))
        return float((yield Command(args)))

    def score(self, member: object) -> Plan[float | None]:
        reply = yield Command(("ZSCORE", self.key, check_member(member)))
        if reply is None:
            return None
        return float(math.floor(float(reply) / SEQUENCE_SPAN)) if self.earliest else float(reply)

    def rank(self, member: object) -> Plan[int | None]:
        raw = check_member(member)
        if self.competition:
            reply = yield package_script("leaderboard_rank").eval((self.key,), (raw,))
        else:
            position = yield Command(("ZREVRANK", self.key, raw))
            reply = None if position is None else int(position) + 1
        return None if reply is None else int(reply)

    def top(self, n: object) -> Plan[list[Entry]]:
        count = _check_size(n, "n")
        reply = yield Command(("ZREVRANGE", self.key, 0, count - 1, "WITHSCORES"))
        # Nothing scores higher than the first entry, so its competition rank is 1.
        return _ranked(0, 0, self._pairs(reply), self.competition)

    def page(self, number: object, size: object) -> Plan[Page]:
        page_number = check_int(number, "number", minimum=1)
        page_size = _check_size(size, "size")
        start = (page_number - 1) * page_size
        reply = yield package_script("leaderboard_page").eval(
            (self.key,), (start, start + page_size - 1, int(self.competition))
        )
        total, higher = int(reply[0]), int(reply[1])
        entries = _ranked(start, higher, self._pairs(reply[2:]), self.competition)
        pages = -(-total // page_size)
        return Page(tuple(entries), page_number, page_size, total, pages)

    def around(self, member: object, radius: object) -> Plan[list[Entry]]:
        raw = check_member(member)
        width = check_int(radius, "radius", minimum=0)
        if width > MAX_RADIUS:
            raise ConfigurationError(f"radius must be <= {MAX_RADIUS}, got {width}")
        reply = yield package_script("leaderboard_around").eval(
            (self.key,), (raw, width, int(self.competition))
        )
        if reply is None:
            return []
        return _ranked(int(reply[0]), int(reply[1]), self._pairs(reply[2:]), self.competition)

    def count(self) -> Plan[int]:
        return int((yield Command(("ZCARD", self.key))))

    def remove(self, members: Iterable[object]) -> Plan[int]:
        raws = [check_member(m) for m in members]
        if not raws:
            raise ConfigurationError("remove() needs at least one member")
        return int((yield Command(("ZREM", self.key, *raws))))

    def clear(self) -> Plan[None]:
        yield Command(("DEL", self.key, self.sequence_key))


def _check_size(value: object, what: str) -> int:
    size = check_int(value, what, minimum=1)
    if size > MAX_PAGE_SIZE:
        raise ConfigurationError(f"{what} must be <= {MAX_PAGE_SIZE}, got {size}")
    return size


def _period_start(period: str, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day.replace(day=1)


def _next_start(period: str, start: date) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _previous_start(period: str, start: date) -> date:
    return _period_start(period, start - timedelta(days=1))


def _label(period: str, start: date) -> str:
    if period == "day":
        return start.isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02}"
    return f"{start.year}-{start.month:02}"


def _utc_day(at: object) -> date:
    if not isinstance(at, datetime):
        raise ConfigurationTypeError(f"at must be a datetime, not {type(at).__name__}")
    # Naive datetimes are taken as UTC: period boundaries are UTC midnights.
    return (at.astimezone(timezone.utc) if at.tzinfo else at).date()


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TimedLeaderboardCore:
    """Plans for boards per day / week / month that expire on their own, and their union."""

    __slots__ = ("clock", "keep", "name", "period", "ties")

    def __init__(
        self,
        name: str | bytes,
        period: str,
        keep: int,
        ties: str,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.name = check_name(name)
        if period not in ("day", "week", "month"):
            raise ConfigurationError(f"period must be 'day', 'week' or 'month', got {period!r}")
        self.period = period
        self.keep = check_int(keep, "keep", minimum=1)
        if LeaderboardCore(name, ties).earliest:  # also validates ties
            raise ConfigurationError("ties='earliest' is not supported by TimedLeaderboard")
        self.ties = ties
        self.clock = clock

    def _start(self, at: object) -> date:
        return _period_start(self.period, _utc_day(self.clock() if at is None else at))

    def suffix(self, at: object = None) -> str:
        """The period's key suffix: ``day:2026-11-26``, ``week:2026-W48``, ``month:2026-11``."""
        return f"{self.period}:{_label(self.period, self._start(at))}"

    def board(self, at: object = None) -> LeaderboardCore:
        return LeaderboardCore(self.name, self.ties, self.suffix(at))

    def _expire_at_ms(self, start: date) -> int:
        # The board lives until `keep` whole periods after its own has ended.
        try:
            end = _next_start(self.period, start)
            for _ in range(self.keep):
                end = _next_start(self.period, end)
        except OverflowError:  # beyond date.max: no expiry can be computed for that board
            raise ConfigurationError(
                f"at={start.isoformat()} is too far ahead: its board would outlive year 9999"
            ) from None
        return int(datetime(end.year, end.month, end.day, tzinfo=timezone.utc).timestamp() * 1000)

    def _write(self, at: object, args: tuple[Any, ...]) -> Plan[Any]:
        start = self._start(at)
        key = LeaderboardCore(self.name, self.ties, self.suffix(at)).key
        expire_at_ms = self._expire_at_ms(start)
        script = package_script("leaderboard_period_write")
        reply = yield script.eval((key,), (expire_at_ms, *args))
        if isinstance(reply, list):  # the script wrote nothing: retention ended by its clock
            label = _label(self.period, start)
            end = datetime.fromtimestamp(expire_at_ms / 1000, timezone.utc)
            server_time = datetime.fromtimestamp(int(reply[0]) / 1000, timezone.utc)
            raise PeriodExpiredError(
                f"{self.period} {label} of {_text(self.name)!r} is past its retention"
                f" (keep={self.keep}): its board expired at {end.isoformat()}, the server's"
                f" clock says {server_time.isoformat()}; nothing was written",
                period=label,
                retention_end=end,
                server_time=server_time,
            )
        return reply

    def add(self, member: object, score: object, only: object, at: object) -> Plan[bool]:
        flags = _only_flags(only)
        args = ("add", check_member(member), check_score(score), flags[0] if flags else "")
        return bool((yield from self._write(at, args)))

    def incr(self, member: object, amount: object, at: object) -> Plan[float]:
        args = ("incr", check_member(member), check_score(amount, "amount"), "")
        return float((yield from self._write(at, args)))

    def combined(
        self, last: object, at: object, cache: object, rebuild: bool
    ) -> Plan[LeaderboardCore]:
        count = check_int(last, "last", minimum=1)
        if count > self.keep + 1:
            raise ConfigurationError(
                f"last={count} asks for periods already expired: keep={self.keep} retains "
                f"{self.keep + 1} periods (the current one and {self.keep} before it)"
            )
        cache_ms = duration_ms(cache, "cache")
        start = self._start(at)
        starts = [start]
        for _ in range(count - 1):
            starts.append(_previous_start(self.period, starts[-1]))
        suffix = f"{self.period}:last{count}:{_label(self.period, start)}"
        view = LeaderboardCore(self.name, self.ties, suffix)
        sources = [
            LeaderboardCore(self.name, self.ties, f"{self.period}:{_label(self.period, s)}").key
            for s in starts
        ]
        yield package_script("leaderboard_union").eval(
            (view.key, *sources), (cache_ms, int(rebuild))
        )
        return view
