"""Types of the cache: loaders, cached functions, ttl (`FOREVER`), results; callable checks."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, Protocol, TypeAlias, TypeVar

from .._errors import ConfigurationError
from .._validate import Duration

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "AsyncBatchLoader",
    "AsyncFunc",
    "AsyncLoader",
    "BatchLoader",
    "FOREVER",
    "Flights",
    "Forever",
    "Func",
    "Loader",
    "NoFlights",
    "Stampede",
    "Ttl",
    "WarmResult",
    "check_callable",
]


Loader: TypeAlias = Callable[[], T]
AsyncLoader: TypeAlias = Callable[[], Awaitable[T]]
# get_or_load_many: given the missing keys, a mapping of key to value (keys it lacks: None).
BatchLoader: TypeAlias = Callable[[list[Any]], Mapping[Any, T]]
AsyncBatchLoader: TypeAlias = Callable[[list[Any]], Awaitable[Mapping[Any, T]]]
Func: TypeAlias = Callable[P, R]
AsyncFunc: TypeAlias = Callable[P, Awaitable[R]]


Stampede = Literal["lock", "xfetch"] | None


class Flights(Protocol):
    """A facade's single-flight (`_flight.SingleFlight` or `AsyncSingleFlight`), as the
    loading plans use it: `join` and `leave` directly, `wait` through the `Call` effect."""

    def join(self, key: bytes) -> Any: ...

    def leave(self, key: bytes, value: Any = None, error: BaseException | None = None) -> None: ...

    def wait(self, flight: Any) -> Any: ...


class NoFlights:
    """No single-flight (plans driven without a facade): every caller leads."""

    def join(self, key: bytes) -> None:
        return None

    def leave(self, key: bytes, value: Any = None, error: BaseException | None = None) -> None:
        pass

    def wait(self, flight: Any) -> Any:
        raise AssertionError("no flight to wait for")


@dataclass(frozen=True, slots=True)
class WarmResult:
    """What `Cache.warm` did: entries written, and skipped because a loader held their key."""

    stored: int
    skipped: int


def _is_async_callable(func: object) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def check_callable(func: object, what: str, *, asynchronous: bool) -> None:
    """Refuse, before any I/O, a non-callable, or a sync/async callable given to the wrong API."""
    if not callable(func):
        raise ConfigurationError(f"{what} must be callable, not {type(func).__name__}")
    is_async = _is_async_callable(func)
    if asynchronous and not is_async:
        raise ConfigurationError(
            f"{what} {func!r} is not an async function; the async cache awaits it (a blocking "
            "function would stall the event loop): pass an `async def`, or use the sync Cache"
        )
    if not asynchronous and is_async:
        raise ConfigurationError(
            f"{what} {func!r} is an async function; use AsyncCache, or pass a plain function"
        )


class Forever:
    """The type of `FOREVER`: a ttl meaning "never expires" (no soft expiry, no ``PX``)."""

    _instance: Forever | None = None

    def __new__(cls) -> Forever:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FOREVER"

    def __reduce__(self) -> str:
        return "FOREVER"


FOREVER = Forever()
"""Pass as ``ttl=`` to store an entry that never expires (it stays until deleted or cleared)."""

Ttl = Duration | Forever
