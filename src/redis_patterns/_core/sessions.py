"""SessionStore's logic as plans: one hash per session, sliding and absolute expiry, user index.

Key layout (``ns`` is the store's namespace, ``b`` a 3-hex-digit bucket):

- ``{ns:b}:s:<token>``: the session hash. User fields are stored under their own names with
  serialized values; metadata fields start with ``:`` (``:c`` created at, ``:a`` absolute
  expiry, both epoch ms on the server's clock; ``:u`` user id; optionally the session's own
  idle lifetime ``:i`` in ms and its own deadline ``:d`` in epoch ms). User field names may not
  start with ``:``.
- ``{ns:b}:u:<user id>``: the user's index, a sorted set of session ids scored by absolute
  expiry (``+inf`` without one).
- ``{ns:b}:n:<token>``: a big create's fields for a moment, inside its MULTI/EXEC block (or,
  when the block's script met NOSCRIPT, until it is sent again: ``_LEFTOVER_MS`` at most).

A session id is ``<b>.<token>``: the bucket, then 43 characters of ``secrets.token_urlsafe(32)``
(256 random bits). An anonymous session gets a random bucket; a user's sessions all live in the
bucket derived from the user id, so the session and its index share a hash tag (one cluster
slot) and every index change is atomic with the session change that causes it.

The pattern's other parts, lowest first: ``sessions_types`` (ids, `Session`, a request's changes
and outcome, checks) ← ``sessions_keys`` (`SessionKeys`: configuration, keys, encoding) ←
``sessions_users`` (`SessionUsers`: ownership, rotation, the user's index) ← this module
(`SessionCore`: the plans on one session, and a request's commit).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any

from .. import _metrics
from .._errors import BackendError, ConfigurationError, PermissionDeniedError
from .._plan import ArgT, Command, Eval, Multi, Plan, raise_first
from .._script import package_script
from .._validate import check_int
from .replication import replicated
from .sessions_types import (
    KEEP,
    UNTOUCHED,
    Session,
    SessionChanges,
    SessionOutcome,
    _collision,
    _earliest,
    check_field,
    check_user_id,
    new_session_id,
    parse_session_id,
)
from .sessions_users import SessionUsers

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


# A session the server sizes above this is read by a plain HGETALL after the read script,
# which then only slides its expiry: Lua copies every byte it returns twice (about 1.5 ms per MB
# of server time), a plain HGETALL sends it as stored. Below it, one round trip is cheaper.
_INLINE_BYTES = 64 * 1024

# The TTL a big write's block gives a key that had none (`SessionCore._write_block`): only a
# hash it recreated from an ended session, left behind when its commit did not run (NOSCRIPT),
# which the block sent again deletes; this bounds one whose second send never arrived.
_LEFTOVER_MS = 10_000
# How a server before 7.0, whose PEXPIRE takes no NX, refuses the block whole while queueing
# (EXECABORT: nothing ran). An ACL user without MULTI/EXEC is told apart by the block itself
# (`PermissionDeniedError`, `_redis_transaction.multi_steps`).
_BLOCK_REFUSED = re.compile(r"wrong number of arguments|syntax error|unsupported option", re.I)
# `SessionCore._create_block`'s answer when the block was refused whole: create by the script.
_BY_SCRIPT: Any = object()


class SessionCore(SessionUsers):
    """State and plans shared by `SessionStore` and `AsyncSessionStore`."""

    __slots__ = ()

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
            reply = _BY_SCRIPT
            if not self.wait_replicas and sum(len(v) for _, v in encoded) >= self.big_create_bytes:
                reply = yield from self._create_block(sid, keys, args, pairs)
            if reply is _BY_SCRIPT:
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
        key = self._key_of(sid)
        reply = yield Eval(package_script("session_get"), (key,), (self.idle_ms, _INLINE_BYTES))
        if reply is not None and len(reply) == 2:
            # a large session: the script slid its expiry, its fields come as they are stored
            # (destroyed since, it reads as gone; changed since, it reads as changed)
            stored = yield Command(("HGETALL", key))
            reply = [x for pair in dict(stored).items() for x in pair] + reply if stored else None
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
        key = self._key_of(sid)
        big = sum(len(value) for value in pairs[1::2]) >= self.big_write_bytes
        if big and self._features.nx_block is not False:
            reply = yield from self._write_block(key, pairs, doomed, own_idle, deadline_in)
        else:
            reply = None
        if reply is None:
            # with nothing to change the script still says whether the session exists
            args: tuple[ArgT, ...] = (len(pairs) // 2, own_idle, deadline_in, self.idle_ms)
            reply = yield package_script("session_write").eval((key,), (*args, *pairs, *doomed))
        if reply and _metrics.on:
            _metrics.SESSION_WRITES.record(self._labels[3])
        return bool(reply)

    def _create_block(
        self, sid: str, keys: tuple[bytes, ...], args: tuple[ArgT, ...], pairs: Sequence[ArgT]
    ) -> Plan[Any]:
        """`create` without passing the values through Lua: ``session_create``'s reply, or
        `_BY_SCRIPT` when the block was refused whole (an ACL user who may not run EXEC).

        One block, one round trip: ``MULTI``, ``HSET`` the fields into the id's scratch hash,
        ``PEXPIRE`` it ``_LEFTOVER_MS``, then ``session_create`` with no fields and the
        scratch hash as its last key, which renames it into the session (or, on an id
        collision, deletes it), ``EXEC``. Nobody sees the session without its fields. If the
        script met ``NOSCRIPT`` the block is sent again (``EVAL``) and decides the same; in
        between, the scratch hash is no session and lives ``_LEFTOVER_MS`` at most. Waiting for
        replicas (``wait_replicas``) takes the script, whose ``WAIT`` follows it.
        """
        scratch = self._scratch_of(sid)
        block = (
            Command(("HSET", scratch, *pairs)),
            Command(("PEXPIRE", scratch, _LEFTOVER_MS)),
            package_script("session_create").eval((*keys, scratch), args),
        )
        try:
            replies = yield Multi(block)
        except PermissionDeniedError:
            return _BY_SCRIPT  # learnt once per client: later blocks are not even sent
        return raise_first(replies)[-1]

    def _write_block(
        self, key: bytes, pairs: Sequence[ArgT], doomed: list[str], own_idle: int, deadline_in: int
    ) -> Plan[int | None]:
        """`write` without passing the values through Lua: ``session_write``'s reply (0 or
        1), or ``None`` when the block was refused whole (nothing ran): by a server before
        7.0 (no ``PEXPIRE ... NX``), or by an ACL user who may not run EXEC.

        One block, one round trip: ``MULTI``, ``HSET`` the fields, ``HDEL`` the deleted ones,
        ``PEXPIRE key <ms> NX``, then ``session_write`` with no fields as the commit, ``EXEC``.
        The HSET recreates a session that has ended; the commit finds no ``:c`` in it and
        deletes it, in the same atomic block, so nobody ever sees it. If the commit met
        ``NOSCRIPT`` the block is sent again (``EVAL``) and decides the same; in between, such
        a hash is not a session for any script (no ``:c``) and lives ``_LEFTOVER_MS`` at most
        (the NX gave it that TTL; a live session keeps its own).
        """
        block: list[Eval | Command] = [Command(("HSET", key, *pairs))]
        if doomed:
            block.append(Command(("HDEL", key, *doomed)))
        block.append(Command(("PEXPIRE", key, _LEFTOVER_MS, "NX")))
        commit = (-1, own_idle, deadline_in, self.idle_ms, _LEFTOVER_MS)
        block.append(package_script("session_write").eval((key,), commit))
        try:
            replies = yield Multi(tuple(block))
        except PermissionDeniedError:
            return None  # an ACL user without @transaction (learnt once per client)
        if self._features.nx_block is None:
            hset, nx = replies[0], replies[-2]
            # the HSET's own error is EXECABORT only when the block was refused whole
            if isinstance(hset, BackendError) and any(
                isinstance(r, BackendError) and _BLOCK_REFUSED.search(str(r)) for r in (hset, nx)
            ):
                self._features.nx_block = False
                return None
            self._features.nx_block = True
        # the HSET's WRONGTYPE first; the commit then raised it too
        return int(raise_first(replies)[-1])

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

    def destroy(self, sid: object) -> Plan[bool]:
        if parse_session_id(sid) is None:
            return False
        assert isinstance(sid, str)
        taken = yield from self._take(sid, fields=False)
        return taken is not None

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
