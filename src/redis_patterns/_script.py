"""`Script`: a Lua script run with EVALSHA, loaded transparently when the server lacks it."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from ._errors import ConfigurationError, ConfigurationTypeError
from ._plan import ArgT, Eval, KeyT

if TYPE_CHECKING:
    from ._runner import AsyncClient, SyncClient

__all__ = ["Script", "package_script"]


class Script:
    """A Lua script, identified by the SHA1 of its source (computed locally, no round trip).

    Call it with a client: ``script(client, keys=[...], args=[...])`` sends one ``EVALSHA``; if
    the server answers ``NOSCRIPT`` (after ``SCRIPT FLUSH``, a restart or a failover) it sends
    ``EVAL`` once, which runs and caches the script. With an asyncio client the call returns an
    awaitable. On a cluster the command goes to the node owning the keys' slot; keys in
    different slots raise `CrossSlotError` before anything is sent.

    Errors raised by the script surface as `ScriptError` carrying the Lua message.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str | bytes, *, name: str | None = None) -> None:
        if isinstance(source, bytes):
            source = source.decode()
        if not isinstance(source, str):
            raise ConfigurationTypeError(
                f"source must be str or bytes, not {type(source).__name__}"
            )
        if not source.strip():
            raise ConfigurationError("source must be a non-empty Lua script")
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.name = name or f"script:{self.sha[:8]}"

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Load a script from a ``.lua`` file, named after the file."""
        file = Path(path)
        return cls(file.read_text(encoding="utf-8"), name=file.stem)

    def __repr__(self) -> str:
        return f"Script(name={self.name!r}, sha={self.sha!r})"

    def eval(self, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> Eval:
        """The effect that runs this script, for use inside a plan."""
        return Eval(self, tuple(keys), tuple(args))

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
        from ._runner import runner_for

        effect = self.eval(keys, args)
        return runner_for(client).perform(effect)


@cache
def package_script(name: str) -> Script:
    """One of the package's own scripts, ``redis_patterns/lua/<name>.lua``."""
    folder = resources.files("redis_patterns").joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text("utf-8")
    return Script(source, name=name)
