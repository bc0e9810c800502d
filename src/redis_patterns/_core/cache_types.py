"""Type aliases of the cache facades: loaders and cached functions, sync and async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeAlias, TypeVar

__all__ = ["AsyncFunc", "AsyncLoader", "Func", "Loader"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

Loader: TypeAlias = Callable[[], T]
AsyncLoader: TypeAlias = Callable[[], Awaitable[T]]
Func: TypeAlias = Callable[P, R]
AsyncFunc: TypeAlias = Callable[P, Awaitable[R]]
