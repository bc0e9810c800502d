"""A session's values: ids (bucket, token), `Session`, a request's changes and outcome, checks."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .._errors import BackendError, ConfigurationError, ConfigurationTypeError
from .._keys import MAX_NAME_BYTES, check_name

__all__ = [
    "KEEP",
    "SID_LENGTH",
    "UNTOUCHED",
    "Session",
    "SessionChanges",
    "SessionOutcome",
    "check_field",
    "check_user_id",
    "new_session_id",
    "parse_session_id",
]

_SID = re.compile(r"[0-9a-f]{3}\.[A-Za-z0-9_-]{43}")
SID_LENGTH: Final = 47


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()
"""Default of ``rotate(user_id=...)``: keep the session's current user."""


def new_session_id(user_id: str | None) -> str:
    """A fresh id: the bucket of ``user_id`` (random when anonymous), a dot, 256 random bits."""
    bucket = _bucket(user_id) if user_id is not None else f"{secrets.randbelow(4096):03x}"
    return f"{bucket}.{secrets.token_urlsafe(32)}"


def parse_session_id(sid: object) -> tuple[str, str] | None:
    """``(bucket, token)`` for a well-formed id; ``None`` for anything else (never raises)."""
    if not isinstance(sid, str) or len(sid) != SID_LENGTH or not _SID.fullmatch(sid):
        return None
    return sid[:3], sid[4:]


def _bucket(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()[:3]


def _earliest(*epoch_ms: bytes | int | None) -> float | None:
    """The earliest of some epoch-ms deadlines in seconds (``None`` and negatives: no deadline)."""
    earliest = -1
    for x in epoch_ms:
        if x is not None:
            at = int(x)
            if at >= 0 and (earliest < 0 or at < earliest):
                earliest = at
    return None if earliest < 0 else earliest / 1000


def _collision() -> BackendError:
    # 256 random bits do not collide; an occupied key means something else writes there
    return BackendError("3 fresh session ids in a row were taken: is another writer using them?")


def check_user_id(user_id: object) -> str:
    """A user id as stored: a non-empty str (an int is converted), at most 1 KiB, no NUL."""
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str):
        raise ConfigurationTypeError(f"user_id must be str or int, not {type(user_id).__name__}")
    # braces are harmless here: the id follows the key's hash tag, it cannot change the slot
    check_name(user_id, "user_id", raw_key=True)
    return user_id


def check_field(name: object, what: str = "field") -> str:
    """A user field name: a non-empty str, at most 1 KiB, not starting with ':' (metadata)."""
    if not isinstance(name, str):
        raise ConfigurationTypeError(f"{what} names must be str, not {type(name).__name__}")
    if not name:
        raise ConfigurationError(f"{what} names must not be empty")
    if name.startswith(":"):
        raise ConfigurationError(f"{what} {name!r}: names starting with ':' are reserved")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ConfigurationError(f"{what} {name[:20]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return name


@dataclass(frozen=True, slots=True, eq=False)
class Session(Mapping[str, Any]):
    """A session as read from the server: a read-only mapping of its fields, plus metadata.

    Times are Unix epoch seconds (float) on the **server's** clock.

    Attributes:
        id: the session id (what the cookie carries).
        user_id: the user the session belongs to, or ``None`` for an anonymous session.
        created_at: when the session was first created (kept across rotations).
        idle_expires_at: when it expires unless used again (capped by ``absolute_expires_at``).
        absolute_expires_at: when it expires whatever happens (the store's absolute lifetime
            or the session's own ``expires_in``, whichever comes first), or ``None``.
        ttl: seconds left before ``idle_expires_at``, as of this read; use it for cookie Max-Age.
    """

    id: str
    user_id: str | None
    created_at: float
    idle_expires_at: float
    absolute_expires_at: float | None
    ttl: float
    data: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        # the id is a bearer credential: show only its bucket
        return (
            f"Session(id={self.id[:4]}..., user_id={self.user_id!r}, fields={sorted(self.data)!r},"
            f" ttl={self.ttl:.3f})"
        )


@dataclass(frozen=True, slots=True)
class SessionChanges:
    """What one web request did to its session: what `SessionStore.commit` persists.

    Attributes:
        loaded: the session the request started with, or ``None`` (no cookie, or a cookie
            naming no live session).
        data: every field the session holds at the end of the request.
        changed: the fields to write (their value differs from the loaded one's).
        deleted: the loaded fields to delete.
        destroy: the request ended the loaded session (logout); ``data`` then goes into a new
            session, under a new id, only if it holds anything (or ``rotate`` is set).
        rotate: ``(user_id,)`` to move the session to a new id bound to ``user_id`` (`KEEP`
            keeps its user, ``None`` makes it anonymous); ``None`` for no rotation.
        had_cookie: the request came with a session cookie, which an empty session deletes.
    """

    loaded: Session | None
    data: Mapping[str, Any]
    changed: Mapping[str, Any] = field(default_factory=dict)
    deleted: Sequence[str] = ()
    destroy: bool = False
    rotate: tuple[Any] | None = None
    had_cookie: bool = False


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """What the response must do with the cookie: set it to ``sid`` or delete it, or nothing.

    ``refresh_only``: the cookie would be sent again unchanged (same id, nothing written), only
    to renew its ``Max-Age``; an app may choose not to.
    """

    sid: str | None
    max_age: int
    touch_cookie: bool
    refresh_only: bool = False


UNTOUCHED: Final = SessionOutcome(None, 0, touch_cookie=False)
