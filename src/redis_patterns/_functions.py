"""`FunctionLibrary`: Redis 7 / Valkey functions (FUNCTION LOAD + FCALL), loaded on demand."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from ._errors import ConfigurationError, ConfigurationTypeError
from ._plan import ArgT, Command, FCall, KeyT, Plan

if TYPE_CHECKING:
    from ._runner import AsyncClient, SyncClient

__all__ = ["FunctionLibrary"]

_HEADER = re.compile(r"\A#!lua name=([A-Za-z0-9_]+)\s*$", re.M)
_FUNCTION_NAME = re.compile(r"\A[A-Za-z0-9_]+\Z")


class FunctionLibrary:
    """A library of Lua functions (Redis >= 7.0, Valkey >= 7.2), called with ``FCALL``.

    Where `Script` is one script known by its SHA, a library holds several named functions
    registered with ``redis.register_function`` and survives restarts when persisted. Calling
    one sends **one** ``FCALL``; if the server answers that the function is not found (never
    loaded, ``FUNCTION FLUSH``, a fresh replica) the library is loaded with ``FUNCTION LOAD
    REPLACE`` (on every primary of a cluster) and the call is sent once more.

    Args:
        source: the library's code, starting with ``#!lua name=<library>``.

    Raises:
        ConfigurationError: empty source or a missing/invalid ``#!lua name=`` header.
        TypeError: ``source`` is not str or bytes.
    """

    __slots__ = ("name", "source")

    def __init__(self, source: str | bytes) -> None:
        if isinstance(source, bytes):
            source = source.decode()
        if not isinstance(source, str):
            raise ConfigurationTypeError(
                f"source must be str or bytes, not {type(source).__name__}"
            )
        match = _HEADER.match(source.lstrip("\n"))
        if match is None:
            raise ConfigurationError("a function library must start with '#!lua name=<name>'")
        self.source = source.lstrip("\n")
        self.name = match.group(1)

    @classmethod
    def from_file(cls, path: str | Path) -> FunctionLibrary:
        """Load a library from a ``.lua`` file."""
        return cls(Path(path).read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"FunctionLibrary(name={self.name!r})"

    def fcall(self, function: str, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> FCall:
        """The effect that calls ``function``, for use inside a plan."""
        if not isinstance(function, str) or not _FUNCTION_NAME.match(function):
            raise ConfigurationError(f"function must be a function name, got {function!r}")
        return FCall(self, function, tuple(keys), tuple(args))

    def load_command(self) -> Command:
        """The effect that (re)loads the library."""
        return Command(("FUNCTION LOAD", "REPLACE", self.source))

    @overload
    def call(
        self,
        client: SyncClient,
        function: str,
        keys: Sequence[KeyT] = (),
        args: Sequence[ArgT] = (),
    ) -> Any: ...

    @overload
    def call(
        self,
        client: AsyncClient,
        function: str,
        keys: Sequence[KeyT] = (),
        args: Sequence[ArgT] = (),
    ) -> Awaitable[Any]: ...

    def call(
        self,
        client: SyncClient | AsyncClient,
        function: str,
        keys: Sequence[KeyT] = (),
        args: Sequence[ArgT] = (),
    ) -> Any:
        """Call ``function`` with ``keys`` and ``args``: the reply (an awaitable with asyncio).

        Raises:
            ConfigurationError: a bad function name (before any I/O).
            CrossSlotError: keys in different cluster slots (before any I/O).
            ScriptError: the function raised, the library does not compile, or the server
                has no functions (Redis < 7).
        """
        from ._runner import runner_for

        return runner_for(client).perform(self.fcall(function, keys, args))

    def load(self, client: SyncClient | AsyncClient) -> Any:
        """Load (or replace) the library now, on every primary of a cluster; returns its name
        (an awaitable with an asyncio client)."""
        from ._runner import runner_for

        return runner_for(client).run(self._load_plan())

    def _load_plan(self) -> Plan[str]:
        yield self.load_command()
        return self.name
