"""Value serializers: JSON (orjson) by default, msgpack on request, pickle only by explicit name."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any, Protocol, runtime_checkable

import orjson

from ._errors import ConfigurationError, ConfigurationTypeError

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
            raise ConfigurationError(
                f"value of type {type(value).__name__} is not JSON-serializable: {exc}"
            ) from exc

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
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(
                f"value of type {type(value).__name__} is not msgpack-serializable: {exc}"
            ) from exc
        return data

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"malformed msgpack data: {exc}") from exc


class PickleSerializer:
    """Pickle, HMAC-SHA256-signed: only bytes signed with ``secret`` are ever unpickled.

    Unpickling runs arbitrary code chosen by whoever wrote the bytes, so on a shared Redis an
    unsigned pickle cache is remote code execution waiting to happen (CVE-2019-17206). Every
    payload is ``mac(32 bytes) + pickle``; ``loads`` checks the MAC in constant time *before*
    unpickling and raises ``ValueError`` on a mismatch. Only by explicit name, with a secret.
    """

    name = "pickle-hmac"

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ConfigurationError(
                "serializer 'pickle' needs secret= (bytes or str, at least 16 bytes): payloads "
                "are HMAC-signed so forged bytes in a shared Redis are never unpickled"
            )
        self._secret = secret

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (TypeError, AttributeError, pickle.PicklingError) as exc:
            raise ConfigurationError(
                f"value of type {type(value).__name__} cannot be pickled: {exc}"
            ) from exc
        return self._mac(data) + data

    def loads(self, data: bytes) -> Any:
        mac, body = data[:32], data[32:]
        if len(mac) != 32 or not hmac.compare_digest(mac, self._mac(body)):
            raise ValueError("pickle payload has a bad signature (tampered or another secret)")
        return pickle.loads(body)  # signed with the user's secret: written by this application


def get_serializer(spec: str | Serializer, *, secret: bytes | str | None = None) -> Serializer:
    """Resolve ``"json"``, ``"msgpack"``, ``"pickle"`` (needs ``secret``) or a `Serializer`.

    Raises:
        ConfigurationError: an unknown name, or ``"pickle"`` without a secret.
    """
    if isinstance(spec, str):
        if spec == "json":
            return JsonSerializer()
        if spec == "msgpack":
            return MsgpackSerializer()
        if spec == "pickle":
            if secret is None:
                raise ConfigurationError(
                    "serializer 'pickle' needs secret=: unsigned pickle lets anyone who can "
                    "write to Redis run code in your process"
                )
            return PickleSerializer(secret)
        raise ConfigurationError(
            f"unknown serializer {spec!r}; use 'json', 'msgpack', 'pickle' or a Serializer"
        )
    if isinstance(spec, Serializer):
        return spec
    raise ConfigurationTypeError(
        f"serializer must be a name or a Serializer, not {type(spec).__name__}"
    )
