"""Effects and plans: the sans-IO vocabulary every pattern's logic is written in.

A *plan* is a generator that yields effects (run a script, run a command, sleep, read the
clock, do several effects at once) and receives each effect's result by ``send``. It never
touches a socket: `SyncRunner` and `AsyncRunner` in ``_runner`` perform the effects, so one
plan serves the blocking and the asyncio API, and tests can drive a plan with canned replies.

Errors raised while performing an effect are thrown into the plan at the ``yield``, already
converted to this library's exceptions, so a plan can catch ``BackendError`` and decide.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

__all__ = [
    "Call",
    "Command",
    "Effect",
    "Eval",
    "FCall",
    "Features",
    "Gather",
    "Multi",
    "Now",
    "Pipeline",
    "Plan",
    "Replicated",
    "Sleep",
    "Transaction",
    "TransactionAttempt",
    "run_canned",
]

T = TypeVar("T")

KeyT: TypeAlias = "str | bytes"
ArgT: TypeAlias = "str | bytes | int | float"


class Lua(Protocol):
    """What `Eval` needs of a script (`LuaScript` in ``_script``): its text and its SHA1."""

    name: str
    source: str
    sha: str


@dataclass(frozen=True, slots=True)
class Eval:
    """Run ``script`` with ``keys`` and ``args`` (EVALSHA, loading it on NOSCRIPT).

    ``node`` picks one of the runner's clients (for patterns over several independent
    servers, such as Redlock); ``None`` means the first.
    """

    script: Lua
    keys: tuple[KeyT, ...]
    args: tuple[ArgT, ...]
    node: int | None = None


class Library(Protocol):
    """What `FCall` needs of a function library (`FunctionLibrary` in ``_scripting``)."""

    name: str

    def load_command(self) -> Command: ...


@dataclass(frozen=True, slots=True)
class FCall:
    """Call ``function`` of ``library`` (FCALL), loading the library once if the server lacks it."""

    library: Library
    function: str
    keys: tuple[KeyT, ...]
    args: tuple[ArgT, ...]
    node: int | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """Send one plain command, e.g. ``Command(("GET", key))``; the reply is the raw reply."""

    args: tuple[ArgT, ...]
    node: int | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` (``time.sleep`` or ``asyncio.sleep``)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Now:
    """Read the client's monotonic clock (seconds); plans never call ``time`` themselves."""


@dataclass(frozen=True, slots=True)
class Gather:
    """Perform several effects concurrently; the result is a list in the same order.

    A failed effect yields its exception in the list instead of raising, so a quorum plan can
    count successes. ``timeout`` bounds the whole fan-out; effects still running then count as
    a ``BackendTimeoutError``.
    """

    effects: tuple[Effect, ...]
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    """One optimistic attempt on a connection-pinned pipeline: WATCH, ``fn(pipe)``, EXEC.

    The runner opens a transactional pipeline, sends ``WATCH *watch``, calls ``fn(pipe)`` (awaited
    when it returns an awaitable; its reads run immediately on the pinned connection, its writes
    are queued after ``pipe.multi()``) and sends EXEC if ``fn`` called ``multi()``. The result is
    a `TransactionAttempt`; a conflict (a watched key changed, or the cluster moved the slot) is
    a result, not an error, so the plan decides whether to retry. A connection lost before EXEC
    raises ``BackendUnavailableError`` (nothing was applied); lost during EXEC, it raises
    ``BackendTimeoutError`` (outcome unknown) — never a silent replay.
    """

    fn: Callable[[Any], Any]
    watch: tuple[KeyT, ...]
    node: int | None = None


@dataclass(frozen=True, slots=True)
class TransactionAttempt:
    """What one `Transaction` effect did: ``committed`` is False on a WATCH conflict.

    ``results`` holds EXEC's replies, or ``None`` when ``fn`` never called ``multi()`` (nothing
    was sent after the reads, so nothing could conflict).
    """

    committed: bool
    value: Any = None
    results: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """Call user code ``func(*args)`` (a cache loader, a flush callback) and return its result.

    The async runner awaits the result when it is awaitable; the sync runner refuses an
    awaitable result with `ConfigurationError` (an async function given to a sync class).
    """

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Send several `Eval`/`Command` effects in one pipelined round trip (no transaction).

    The result is a list in the same order; a failed item yields its exception in the list.
    """

    effects: tuple[Eval | Command, ...]


@dataclass(frozen=True, slots=True)
class Multi:
    """Send several `Eval`/`Command` effects between ``MULTI`` and ``EXEC``, in one round trip
    and without WATCH: they run as one atomic block, nothing interleaved.

    The result is EXEC's replies in order, a failed item's error in its place (an item refused
    while queued fails the block: each item then holds that refusal or ``EXECABORT``). An item
    that met ``NOSCRIPT`` sends the whole block again, that item as ``EVAL``: write a block so
    that one of its scripts not running leaves nothing a second run does not undo (the cache's
    big store: its commit stores only what its prep prepared in this block). A connection lost
    once the block was being written raises ``BackendTimeoutError`` (outcome unknown), never a
    silent replay. On a cluster every key of the block must share one slot.
    """

    effects: tuple[Eval | Command, ...]
    node: int | None = None


@dataclass(slots=True)
class Features:
    """What one client's server is known to support, learnt by the plans that probe it.

    Not an effect: a plain record the runner keeps per client (`SyncRunner.features`, shared by
    every object built on that client) and a pattern's core receives as a value, so a plan
    reads and updates it without any I/O of its own. ``None`` means "not probed yet".
    """

    delifeq: bool | None = None
    """``DELIFEQ`` and ``SET ... IFEQ`` (Valkey >= 9): compare-and-delete/expire, no script."""
    transactions: bool | None = None
    """The user may run ``MULTI``/``EXEC`` (ACL ``@transaction``): learnt by the first `Multi`
    block; refused, every later block raises `PermissionDeniedError` before sending anything
    and its pattern takes its script path instead."""
    nx_block: bool | None = None
    """A MULTI/EXEC block with ``PEXPIRE key ms NX`` runs: the server takes NX (Redis >= 7.0,
    every Valkey) and the user may run EXEC (ACL ``@transaction``). A big session write's
    block needs both (``sessions``); refused (whole: nothing ran), writes go by the script."""


@dataclass(frozen=True, slots=True)
class Replicated:
    """Run ``write`` and ``WAIT replicas timeout_ms`` right after it, pipelined on the write's
    own connection (one round trip; WAIT counts the writes of its connection). The result is
    ``(write's reply, replicas that confirmed)``; a failed write raises as an `Eval` would.
    Standalone (and Sentinel) clients only: a cluster routes WAIT to another node.
    """

    write: Eval
    replicas: int
    timeout_ms: int


Effect: TypeAlias = (
    "Eval | FCall | Command | Sleep | Now | Gather | Transaction | Call | Pipeline | Replicated"
    " | Multi"
)
Plan: TypeAlias = Generator["Effect", Any, T]


_MISSING = object()


def raise_first(replies: list[Any]) -> list[Any]:
    """The replies of a `Pipeline` or `Multi`, raising the first failed item's error."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


def run_canned(plan: Plan[T], replies: Sequence[object]) -> tuple[T, list[Effect]]:
    """Drive ``plan`` with canned replies, without any server: for unit tests of the logic.

    A reply that is an exception instance is thrown into the plan. Returns the plan's value and
    the effects it yielded.
    """
    seen: list[Effect] = []
    feed = iter(replies)
    try:
        effect = next(plan)
        while True:
            seen.append(effect)
            reply = next(feed, _MISSING)
            if reply is _MISSING:
                raise AssertionError(f"the plan yielded {effect!r} but no canned reply is left")
            effect = plan.throw(reply) if isinstance(reply, BaseException) else plan.send(reply)
    except StopIteration as stop:
        return stop.value, seen
