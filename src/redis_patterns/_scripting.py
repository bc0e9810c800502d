"""`Script` and `FunctionLibrary`: the public Lua objects, called with a client (above the
runners: calling one runs its effect with `runner_for(client)`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, overload

from ._errors import ConfigurationError, ConfigurationTypeError
from ._plan import ArgT, Command, FCall, KeyT, Plan
from ._runner import AsyncClient, SyncClient, runner_for
from ._script import LuaScript

__all__ = ["FunctionLibrary", "Script"]


class Script(LuaScript):
    """A Lua script, identified by the SHA1 of its source (computed locally, no round trip).

    Call it with a client: ``script(client, keys=[...], args=[...])`` sends one ``EVALSHA``; if
    the server answers ``NOSCRIPT`` (after ``SCRIPT FLUSH``, a restart or a failover) it sends
    ``EVAL`` once, which runs and caches the script. With an asyncio client the call returns an
    awaitable. On a cluster the command goes to the node owning the keys' slot; keys in
    different slots raise `CrossSlotError` before anything is sent.

    Errors raised by the script surface as `ScriptError` carrying the Lua message.
    """

    __slots__ = ()

    def __init__(self, source: str | bytes, *, name: str | None = None) -> None:
        if isinstance(source, bytes):
            source = source.decode()
        if not isinstance(source, str):
            raise ConfigurationTypeError(
                f"source must be str or bytes, not {type(source).__name__}"
            )
        if not source.strip():
            raise ConfigurationError("source must be a non-empty Lua script")
        super().__init__(source, name=name)

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Load a script from a ``.lua`` file, named after the file."""
        file = Path(path)
        return cls(file.read_text(encoding="utf-8"), name=file.stem)

    @overload
    def __call__(
        self, client: SyncClient, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()
    ) -> Any: ...

    @overload
    def __call__(
        self, client: AsyncClient, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()
    ) -> Awaitable[Any]: ...

    def __call__(
        self,
        client: SyncClient | AsyncClient,
        keys: Sequence[KeyT] = (),
        args: Sequence[ArgT] = (),
    ) -> Any:
        return runner_for(client).perform(self.eval(keys, args))


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
        return runner_for(client).perform(self.fcall(function, keys, args))

    def load(self, client: SyncClient | AsyncClient) -> Any:
        """Load (or replace) the library now, on every primary of a cluster; returns its name
        (an awaitable with an asyncio client)."""
        return runner_for(client).run(self._load_plan())

    def _load_plan(self) -> Plan[str]:
        yield self.load_command()
        return self.name
