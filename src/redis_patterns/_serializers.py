"""Value serializers: JSON (orjson) by default, msgpack on request, pickle only by explicit name."""

from __future__ import annotations

import pickle
from typing import Any, Protocol, runtime_checkable

import orjson

from ._errors import ConfigurationError

__all__ = ["Serializer", "get_serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``loads`` raises ``ValueError`` on malformed input."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """JSON through orjson: safe to load from an untrusted cache, and fast."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError as exc:
            raise ConfigurationError(f"value is not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class MsgpackSerializer:
    """MessagePack (extra ``redis-patterns[msgpack]``): compact, binary-safe."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ConfigurationError(
                "serializer 'msgpack' needs the msgpack package: pip install "
                "'redis-patterns[msgpack]'"
            ) from exc
        self._msgpack = msgpack

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self._msgpack.packb(value, use_bin_type=True)
        except TypeError as exc:
            raise ConfigurationError(f"value is not msgpack-serializable: {exc}") from exc
        return data

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"malformed msgpack data: {exc}") from exc


class PickleSerializer:
    """Pickle: loading runs arbitrary code from whoever can write the key. Only by explicit name."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # the user chose pickle by name


def get_serializer(spec: str | Serializer) -> Serializer:
    """Resolve ``"json"``, ``"msgpack"``, ``"pickle"`` or a `Serializer` object."""
    if isinstance(spec, str):
        if spec == "json":
            return JsonSerializer()
        if spec == "msgpack":
            return MsgpackSerializer()
        if spec == "pickle":
            return PickleSerializer()
        raise ConfigurationError(
            f"unknown serializer {spec!r}; use 'json', 'msgpack', 'pickle' or a Serializer"
        )
    if isinstance(spec, Serializer):
        return spec
    raise TypeError(f"serializer must be a name or a Serializer, not {type(spec).__name__}")
