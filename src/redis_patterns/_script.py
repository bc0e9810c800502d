"""The script value: a Lua source known by the SHA1 of its text, and the package's own scripts.

A value only (the effects layer): `LuaScript.eval` makes the `Eval` effect a plan yields. The
public `Script`, which can also be called with a client, lives above the runners in
``_scripting``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources

from ._plan import ArgT, Eval, KeyT

__all__ = ["LuaScript", "package_script"]


class LuaScript:
    """A Lua script and its SHA1 (computed locally, no round trip), named for messages."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str, *, name: str | None = None) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.name = name or f"script:{self.sha[:8]}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sha={self.sha!r})"

    def eval(self, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> Eval:
        """The effect that runs this script, for use inside a plan."""
        return Eval(self, tuple(keys), tuple(args))


@cache
def package_script(name: str) -> LuaScript:
    """One of the package's own scripts, ``redis_patterns/lua/<name>.lua``."""
    folder = resources.files("redis_patterns").joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text("utf-8")
    return LuaScript(source, name=name)
