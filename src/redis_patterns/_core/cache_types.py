"""Type aliases of the cache facades: loaders and cached functions, sync and async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeAlias, TypeVar

__all__ = ["AsyncBatchLoader", "AsyncFunc", "AsyncLoader", "BatchLoader", "Func", "Loader"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

Loader: TypeAlias = Callable[[], T]
AsyncLoader: TypeAlias = Callable[[], Awaitable[T]]
# get_or_load_many: given the missing keys, a mapping of key to value (keys it lacks: None).
BatchLoader: TypeAlias = Callable[[list[Any]], Mapping[Any, T]]
AsyncBatchLoader: TypeAlias = Callable[[list[Any]], Awaitable[Mapping[Any, T]]]
Func: TypeAlias = Callable[P, R]
AsyncFunc: TypeAlias = Callable[P, Awaitable[R]]
