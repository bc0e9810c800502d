"""What every session plan shares: the store's configuration, its keys, fields' encoding."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice
from types import MappingProxyType
from typing import Any

from .._errors import BackendError, ConfigurationError, ConfigurationTypeError
from .._keys import check_name, key_parts, make_key
from .._plan import ArgT, Command, Features, Plan
from .._serializers import Serializer, get_serializer
from .._validate import Duration, duration_ms, optional_duration_ms
from .sessions_types import KEEP, Session, _bucket, _earliest, check_field

__all__ = ["BIG_CREATE_BYTES", "BIG_WRITE_BYTES", "SessionKeys"]

# From this many bytes of values up, a write sends them in a MULTI/EXEC block with plain HSET
# rather than through session_write.lua, which copies every argument into Lua (docs/sessions.md,
# "Big writes"; the crossover measured there).
BIG_WRITE_BYTES = 16 * 1024
# From this many bytes of values up, a create puts them into a scratch hash by a plain HSET,
# which session_create.lua renames into the session (docs/sessions.md, "Big creates"): its block
# costs the caller more than the one script below about this (the crossover measured there).
BIG_CREATE_BYTES = 64 * 1024


class SessionKeys:
    """A store's validated configuration, the keys of a session and of a user's index, and the
    encoding of fields and expiries (the layout is in ``sessions``' docstring)."""

    __slots__ = (
        "_features",
        "_head",
        "_labels",
        "absolute_ms",
        "big_create_bytes",
        "big_write_bytes",
        "idle_ms",
        "namespace",
        "serializer",
        "wait_replicas",
    )

    def __init__(
        self,
        namespace: str,
        idle_ttl: Duration,
        absolute_ttl: Duration | None,
        serializer: str | Serializer,
        wait_replicas: int = 0,
        features: Features | None = None,
    ) -> None:
        # checked against the client's kind by the store (check_wait_replicas)
        self.wait_replicas = wait_replicas
        # what the client's server supports (shared by every object on that client)
        self._features = Features() if features is None else features
        # a write whose values total this many bytes or more skips Lua (`SessionCore.write`)
        self.big_write_bytes = BIG_WRITE_BYTES
        self.big_create_bytes = BIG_CREATE_BYTES
        if not isinstance(namespace, str):
            raise ConfigurationTypeError(f"namespace must be str, not {type(namespace).__name__}")
        check_name(namespace, "namespace")
        self.namespace = namespace
        # a session key is this, its id's bucket, "}:s:", its token (`session_key`): built on
        # every read, so the namespace is encoded once
        self._head = key_parts(namespace)[0]
        self.idle_ms = duration_ms(idle_ttl, "idle_ttl")
        self.absolute_ms = optional_duration_ms(absolute_ttl, "absolute_ttl")
        if self.absolute_ms is not None and self.absolute_ms < self.idle_ms:
            raise ConfigurationError(
                f"absolute_ttl ({absolute_ttl!r}) must be >= idle_ttl ({idle_ttl!r}) or None"
            )
        self.serializer = get_serializer(serializer)
        # the metrics' label sets: found, missing, create, update, rotated
        self._labels = (
            (namespace, "found"),
            (namespace, "missing"),
            (namespace, "create"),
            (namespace, "update"),
            (namespace,),
        )

    # -- keys ---------------------------------------------------------------------------------

    def session_key(self, bucket: str, token: str) -> bytes:
        return make_key(self.namespace, bucket.encode(), "s:" + token)

    def index_key(self, user_id: str) -> bytes:
        return make_key(self.namespace, _bucket(user_id).encode(), "u:" + user_id)

    def _key_of(self, sid: str) -> bytes:
        """`session_key` of a well-formed (ASCII) id."""
        return self._head + sid[:3].encode() + b"}:s:" + sid[4:].encode()

    def _scratch_of(self, sid: str) -> bytes:
        """Where a big create of ``sid`` puts the fields before they become the session."""
        return self._head + sid[:3].encode() + b"}:n:" + sid[4:].encode()

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, mapping: object, what: str = "data") -> list[tuple[str, bytes]]:
        """Check field names and serialize values; raises before any I/O."""
        if not isinstance(mapping, Mapping):
            raise ConfigurationTypeError(f"{what} must be a mapping, not {type(mapping).__name__}")
        return [(check_field(k, what), self.serializer.dumps(v)) for k, v in mapping.items()]

    def _session(
        self, sid: str, now_ms: int, ttl_ms: int, flat: list[bytes], size: int | None = None
    ) -> Session:
        """The `Session` of ``flat`` field/value pairs (its first ``size`` items, default all)."""
        loads = self.serializer.loads
        data: dict[str, Any] = {}
        meta: dict[bytes, bytes] = {}
        pairs = iter(flat) if size is None else islice(flat, size)
        for name, raw in zip(pairs, pairs, strict=True):
            if name[:1] == b":":
                meta[name] = raw
                continue
            try:
                data[name.decode()] = loads(raw)
            except ValueError as exc:  # never guess (and never unpickle): report it
                raise BackendError(
                    f"session field {name!r} does not hold valid {self.serializer.name}: {exc}"
                ) from exc
        user = meta.get(b":u")
        return Session(
            id=sid,
            user_id=None if user is None else user.decode(),
            created_at=int(meta.get(b":c", now_ms)) / 1000,
            idle_expires_at=(now_ms + ttl_ms) / 1000,
            absolute_expires_at=_earliest(meta.get(b":a"), meta.get(b":d")),
            ttl=ttl_ms / 1000,
            data=MappingProxyType(data),
        )

    def _own_expiry(self, idle_ttl: object, expires_in: object) -> tuple[int, int]:
        """A session's own idle lifetime and deadline as script arguments (ms; -1 keeps, 0
        removes, from ``KEEP`` and ``None``)."""
        idle = -1 if idle_ttl is KEEP else optional_duration_ms(idle_ttl, "idle_ttl") or 0
        deadline = -1 if expires_in is KEEP else optional_duration_ms(expires_in, "expires_in")
        return idle, deadline or 0

    def _command(self, *args: ArgT) -> Plan[Any]:
        reply = yield Command(args)
        return reply
