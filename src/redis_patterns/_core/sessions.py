"""SessionStore's logic as plans: one hash per session, sliding and absolute expiry, user index.

Key layout (``ns`` is the store's namespace, ``b`` a 3-hex-digit bucket):

- ``{ns:b}:s:<token>``: the session hash. User fields are stored under their own names with
  serialized values; metadata fields start with ``:`` (``:c`` created at, ``:a`` absolute
  expiry, both epoch ms on the server's clock; ``:u`` user id; optionally the session's own
  idle lifetime ``:i`` in ms and its own deadline ``:d`` in epoch ms). User field names may not
  start with ``:``.
- ``{ns:b}:u:<user id>``: the user's index, a sorted set of session ids scored by absolute
  expiry (``+inf`` without one).

A session id is ``<b>.<token>``: the bucket, then 43 characters of ``secrets.token_urlsafe(32)``
(256 random bits). An anonymous session gets a random bucket; a user's sessions all live in the
bucket derived from the user id, so the session and its index share a hash tag (one cluster
slot) and every index change is atomic with the session change that causes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from .. import _metrics
from .._errors import (
    BackendError,
    ConfigurationError,
    ConfigurationTypeError,
    TransactionConflictError,
)
from .._keys import MAX_NAME_BYTES, check_name, make_key
from .._plan import ArgT, Command, Eval, Plan
from .._script import package_script
from .._serializers import Serializer, get_serializer
from .._validate import Duration, check_int, duration_ms, optional_duration_ms
from .replication import replicated

__all__ = [
    "KEEP",
    "UNTOUCHED",
    "Session",
    "SessionChanges",
    "SessionCore",
    "SessionOutcome",
    "new_session_id",
    "parse_session_id",
]

log = logging.getLogger("redis_patterns.sessions")

_SID = re.compile(r"[0-9a-f]{3}\.[A-Za-z0-9_-]{43}")
SID_LENGTH: Final = 47
# How often a plan re-sends after the server reported keys it had not declared (another client
# changed the user's index in between). Each retry declares everything the server reported.
_ATTEMPTS: Final = 8
# When a user's index reaches a multiple of this size, the create or login that made it so
# also drops its dead ids.
_PRUNE_EVERY: Final = 32


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
    given = [int(x) for x in epoch_ms if x is not None and int(x) >= 0]
    return min(given) / 1000 if given else None


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


def _gone(loaded: Session, dropped: str) -> SessionOutcome:
    """The session a request loaded ended during the request: destroyed (logout here or
    elsewhere, ``destroy_user``), rotated by another request, or expired. Nothing is written.

    A new session would hold fields of the dead one, or fields a request made under its
    identity, and would live outside its user's index, where no later ``destroy_user`` finds
    it: a logout would not stick, an absolute expiry would not end anything. The cookie is left
    alone: the id it holds is dead anyway (the next request starts anonymous), and a concurrent
    login may just have replaced it.
    """
    log.info(
        "session %s... ended during the request (destroyed, rotated elsewhere or expired);"
        " not written: %s",
        loaded.id[:4],
        dropped,
    )
    return UNTOUCHED


def _wrote(reply: Any) -> bool:
    return reply is not None  # None: the id was taken, nothing was written


def _took(reply: Any) -> bool:
    return reply is not None and int(reply[0]) != -1  # -1: wrong owner, nothing changed


class SessionCore:
    """State and plans shared by `SessionStore` and `AsyncSessionStore`."""

    __slots__ = ("_labels", "absolute_ms", "idle_ms", "namespace", "serializer", "wait_replicas")

    def __init__(
        self,
        namespace: str,
        idle_ttl: Duration,
        absolute_ttl: Duration | None,
        serializer: str | Serializer,
        wait_replicas: int = 0,
    ) -> None:
        # checked against the client's kind by the store (check_wait_replicas)
        self.wait_replicas = wait_replicas
        if not isinstance(namespace, str):
            raise ConfigurationTypeError(f"namespace must be str, not {type(namespace).__name__}")
        check_name(namespace, "namespace")
        self.namespace = namespace
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
        return self.session_key(sid[:3], sid[4:])

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
        data: dict[str, Any] = {}
        meta: dict[bytes, bytes] = {}
        for i in range(0, len(flat) if size is None else size, 2):
            name, raw = flat[i], flat[i + 1]
            if name.startswith(b":"):
                meta[name] = raw
                continue
            try:
                data[name.decode()] = self.serializer.loads(raw)
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

    # -- plans --------------------------------------------------------------------------------

    def create(
        self, data: object, user_id: object, idle_ttl: object = None, expires_in: object = None
    ) -> Plan[Session]:
        uid = None if user_id is None else check_user_id(user_id)
        if idle_ttl is KEEP or expires_in is KEEP:
            raise ConfigurationError("a new session has no expiry to keep: pass None")
        own_idle, deadline_in = self._own_expiry(idle_ttl, expires_in)
        encoded = self.encode({} if data is None else data)
        # what a later get() returns (JSON turns tuples into lists, ...), not what was passed
        normalized = {name: self.serializer.loads(raw) for name, raw in encoded}
        pairs = [x for pair in encoded for x in pair]
        for _ in range(3):  # a 256-bit collision is not going to happen; refuse to loop on it
            sid = new_session_id(uid)
            keys: tuple[bytes, ...] = (self._key_of(sid),)
            if uid is not None:
                keys += (self.index_key(uid),)
            args: tuple[ArgT, ...] = (
                *(self.idle_ms, self.absolute_ms or 0, 0, 0, uid or "", sid),
                *(own_idle, 0, deadline_in),
            )
            create = package_script("session_create").eval(keys, (*args, *pairs))
            reply = yield from replicated(create, self.wait_replicas, "the new session", _wrote)
            if reply is None:
                continue
            now_ms, ttl_ms, absolute_at, size, deadline = (int(x) for x in reply)
            if uid is not None:
                yield from self._prune(uid, size)
            if _metrics.on:
                _metrics.SESSION_WRITES.record(self._labels[2])
            return Session(
                id=sid,
                user_id=uid,
                created_at=now_ms / 1000,
                idle_expires_at=(now_ms + ttl_ms) / 1000,
                absolute_expires_at=_earliest(absolute_at, deadline),
                ttl=ttl_ms / 1000,
                data=MappingProxyType(normalized),
            )
        raise _collision()

    def get(self, sid: object) -> Plan[Session | None]:
        if parse_session_id(sid) is None:
            return None
        assert isinstance(sid, str)
        reply = yield Eval(package_script("session_get"), (self._key_of(sid),), (self.idle_ms,))
        if _metrics.on:
            _metrics.SESSION_READS.record(self._labels[0 if reply is not None else 1])
        if reply is None:
            return None
        # the hash's field/value pairs, then the server time and the lifetime just set
        return self._session(sid, int(reply[-2]), int(reply[-1]), reply, len(reply) - 2)

    def write(
        self,
        sid: object,
        mapping: object,
        delete: object,
        idle_ttl: object = KEEP,
        expires_in: object = KEEP,
    ) -> Plan[bool]:
        pairs = [x for pair in self.encode(mapping, "mapping") for x in pair]
        if isinstance(delete, str | bytes) or not isinstance(delete, Iterable):
            raise ConfigurationError("delete must be an iterable of field names, not a string")
        doomed = [check_field(name) for name in delete]
        own_idle, deadline_in = self._own_expiry(idle_ttl, expires_in)
        if parse_session_id(sid) is None:
            return False
        assert isinstance(sid, str)
        # with nothing to change the script still says whether the session exists
        args: tuple[ArgT, ...] = (len(pairs) // 2, own_idle, deadline_in, self.idle_ms)
        reply = yield package_script("session_write").eval(
            (self._key_of(sid),), (*args, *pairs, *doomed)
        )
        if reply and _metrics.on:
            _metrics.SESSION_WRITES.record(self._labels[3])
        return bool(reply)

    def incr(self, sid: object, name: object, amount: object) -> Plan[int | None]:
        check_field(name)
        check_int(amount, "amount")
        if self.serializer.name != "json":
            raise ConfigurationError("incr needs the 'json' serializer (integers stored as text)")
        if parse_session_id(sid) is None:
            return None
        assert isinstance(sid, str)
        assert isinstance(name, str)
        assert isinstance(amount, int)
        if not -(2**63) <= amount < 2**63:
            raise ConfigurationError(f"amount must fit in 64 bits, got {amount}")
        reply = yield package_script("session_incr").eval((self._key_of(sid),), (name, amount))
        return None if reply is None else int(reply[0])

    def ttl(self, sid: object) -> Plan[float | None]:
        if parse_session_id(sid) is None:
            return None
        assert isinstance(sid, str)
        reply = yield from self._command("PTTL", self._key_of(sid))
        pttl = int(reply)
        if pttl == -2:
            return None
        # -1 (no expiry) never happens to a session this store wrote; say "forever" honestly
        return float("inf") if pttl == -1 else pttl / 1000

    def _command(self, *args: ArgT) -> Plan[Any]:
        reply = yield Command(args)
        return reply

    def _owner(self, sid: str) -> Plan[tuple[bool, str]]:
        """Whether the session exists, and its user id ('' when anonymous)."""
        reply = yield from self._command("HMGET", self._key_of(sid), ":c", ":u")
        created, user = reply
        return created is not None, "" if user is None else user.decode()

    def _take(self, sid: str, owner: str = "") -> Plan[tuple[int, int, list[bytes]] | None]:
        """Delete the session (and its index entry) atomically, returning what it held.

        ``owner`` is the user believed to own it; when wrong, the script says who does and
        changes nothing, and the next attempt declares that user's index.
        """
        for _ in range(_ATTEMPTS):
            keys: tuple[bytes, ...] = (self._key_of(sid),)
            if owner:
                keys += (self.index_key(owner),)
            take = package_script("session_take").eval(keys, (owner, sid))
            reply = yield from replicated(take, self.wait_replicas, "the session's deletion", _took)
            if reply is None:
                return None
            if int(reply[0]) == -1:
                owner = reply[1].decode()
                continue
            return int(reply[0]), int(reply[1]), reply[2]
        raise TransactionConflictError("the session's owner kept changing", attempts=_ATTEMPTS)

    def destroy(self, sid: object) -> Plan[bool]:
        if parse_session_id(sid) is None:
            return False
        assert isinstance(sid, str)
        taken = yield from self._take(sid)
        return taken is not None

    def rotate(self, sid: object, user_id: object) -> Plan[str | None]:
        new_uid = None if user_id is KEEP or user_id is None else check_user_id(user_id)
        if parse_session_id(sid) is None:
            return None
        assert isinstance(sid, str)
        exists, owner = yield from self._owner(sid)
        if not exists:
            return None
        target = owner if user_id is KEEP else (new_uid or "")
        if target == owner:
            # same user, same bucket: one script moves everything, index included
            for _ in range(3):
                new_sid = new_session_id(target or None)
                if target == "":
                    new_sid = sid[:3] + new_sid[3:]  # an anonymous session keeps its bucket
                keys: tuple[bytes, ...] = (self._key_of(sid), self._key_of(new_sid))
                if target:
                    keys += (self.index_key(target),)
                args = (target, sid, new_sid, self.idle_ms)
                reply = yield package_script("session_rotate").eval(keys, args)
                if reply is None:
                    return None
                if int(reply[0]) == -1:  # the session changed hands since we looked: it's gone
                    return None
                if int(reply[0]) == -2:
                    continue
                self._rotated()
                return new_sid
            raise _collision()
        # a new user means a new bucket (another slot on a cluster): take the session out
        # atomically, then put it back under the new id. Exactly one concurrent rotate wins the
        # take; if this process dies between the two steps the session is lost (logged out),
        # never duplicated.
        taken = yield from self._take(sid, owner)
        if taken is None:
            return None
        _, _, flat = taken
        meta = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2) if flat[i].startswith(b":")}
        pairs = [
            x
            for i in range(0, len(flat), 2)
            if not flat[i].startswith(b":")
            for x in flat[i : i + 2]
        ]
        for _ in range(3):
            new_sid = new_session_id(target or None)
            keys = (self._key_of(new_sid),)
            if target:
                keys += (self.index_key(target),)
            create_args: tuple[ArgT, ...] = (
                self.idle_ms,
                0,
                int(meta.get(b":a", b"0")),
                int(meta.get(b":c", b"0")),
                target,
                new_sid,
                int(meta.get(b":i", b"0")),
                int(meta.get(b":d", b"0")),
                0,
            )
            reply = yield package_script("session_create").eval(keys, (*create_args, *pairs))
            if reply is not None:
                if target:  # a login adds to the index as a create does
                    yield from self._prune(target, int(reply[3]))
                self._rotated()
                return new_sid
            if meta.get(b":a") is not None or meta.get(b":d") is not None:
                return None  # the absolute lifetime or deadline ran out during the rotation
        raise _collision()

    def _rotated(self) -> None:
        if _metrics.on:
            _metrics.SESSION_ROTATIONS.record(self._labels[4])

    def _prune(self, user_id: str, size: int) -> Plan[None]:
        """After an id joined the index (now ``size`` long): every ``_PRUNE_EVERY`` entries,
        drop the ids of sessions that idled out (the script drops those past their absolute
        expiry itself). A size only grows one by one, so no multiple is skipped: an index
        never holds more than ``_PRUNE_EVERY`` ids beyond those alive at its last prune."""
        if size >= _PRUNE_EVERY and size % _PRUNE_EVERY == 0:
            yield from self.sessions_of(user_id)

    def _index(self, user_id: str, mode: str, ids: list[str]) -> Plan[tuple[Any, list[str]]]:
        """Run ``session_user`` in ``mode`` over ``ids``; returns its result and the new ids."""
        keys = (self.index_key(user_id), *(self._key_of(i) for i in ids))
        result, undeclared = yield package_script("session_user").eval(keys, (mode, *ids))
        # only ids this store wrote are ever indexed; skip anything else rather than fail on it
        fresh = [m.decode() for m in undeclared if parse_session_id(m.decode()) is not None]
        return result, fresh

    def destroy_user(self, user_id: object) -> Plan[int]:
        uid = check_user_id(user_id)
        # The first round reads the index; each next one deletes the ids the previous one
        # reported, atomically with their index entries, and reports sessions created since.
        # Every session that existed when this started is gone at the end; a session created
        # meanwhile is deleted too unless it appeared during the last round (it stays indexed).
        total, pending = 0, list[str]()
        for _ in range(_ATTEMPTS):
            deleted, pending = yield from self._index(uid, "destroy", pending)
            total += int(deleted)
            if not pending:
                break
        return total

    def sessions_of(self, user_id: object) -> Plan[list[str]]:
        uid = check_user_id(user_id)
        _, ids = yield from self._index(uid, "list", [])
        if not ids:
            return []
        live, fresh = yield from self._index(uid, "list", ids)
        # ids indexed between the two rounds were created just now: live as far as we know
        return [m.decode() for m in live] + fresh

    def commit(self, changes: SessionChanges) -> Plan[SessionOutcome]:
        """Persist what a request did to its session; returns what to do with the cookie.

        A request that loaded no session creates one only if it put something in it (or logged
        in). Fields set after a destroy go into a brand-new session. A request whose loaded
        session ended meanwhile (destroyed, rotated elsewhere, expired) writes nothing more and
        leaves the cookie alone: it never carries anything into a new session.
        """
        loaded, rotate = changes.loaded, changes.rotate
        if changes.destroy:
            if loaded is not None:
                yield from self.destroy(loaded.id)
            loaded = None
        if loaded is None:
            if not changes.data and rotate is None:
                # nothing to keep; a stale or forged cookie is dropped
                return SessionOutcome(None, 0, touch_cookie=changes.had_cookie)
            user = None if rotate is None or rotate[0] is KEEP else rotate[0]
            created = yield from self.create(dict(changes.data), user)
            return SessionOutcome(created.id, int(created.ttl), touch_cookie=True)
        sid, changed, deleted = loaded.id, changes.changed, changes.deleted
        wrote = bool(changed or deleted)
        if wrote:
            exists = yield from self.write(sid, changed, deleted)
            if not exists:
                return _gone(loaded, f"fields set {sorted(changed)}, deleted {sorted(deleted)}")
        if rotate is not None:
            new_sid = yield from self.rotate(sid, rotate[0])
            if new_sid is None:
                return _gone(loaded, "the rotation")
            sid = new_sid
        refresh_only = sid == loaded.id and not wrote
        return SessionOutcome(sid, int(loaded.ttl), touch_cookie=True, refresh_only=refresh_only)
