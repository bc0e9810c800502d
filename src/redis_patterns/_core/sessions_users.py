"""A user's sessions as plans: ownership, rotation (login), the user's index, log out everywhere."""

from __future__ import annotations

from typing import Any, Final

from .. import _metrics
from .._errors import TransactionConflictError
from .._plan import ArgT, Plan
from .._script import package_script
from .replication import replicated
from .sessions_keys import SessionKeys
from .sessions_types import KEEP, _collision, check_user_id, new_session_id, parse_session_id

__all__ = ["SessionUsers"]

# How often a plan re-sends after the server reported keys it had not declared (another client
# changed the user's index in between). Each retry declares everything the server reported.
_ATTEMPTS: Final = 8
# When a user's index reaches a multiple of this size, the create or login that made it so
# also drops its dead ids.
_PRUNE_EVERY: Final = 32


def _took(reply: Any) -> bool:
    return reply is not None and int(reply[0]) != -1  # -1: wrong owner, nothing changed


class SessionUsers(SessionKeys):
    """The plans that know a session's user: taking it out with its index entry, rotating it to
    a new id (and user), pruning, listing and destroying a user's sessions."""

    __slots__ = ()

    def _owner(self, sid: str) -> Plan[tuple[bool, str]]:
        """Whether the session exists, and its user id ('' when anonymous)."""
        reply = yield from self._command("HMGET", self._key_of(sid), ":c", ":u")
        created, user = reply
        return created is not None, "" if user is None else user.decode()

    def _take(
        self, sid: str, owner: str = "", *, fields: bool = True
    ) -> Plan[tuple[int, int, list[bytes]] | None]:
        """Delete the session (and its index entry) atomically, returning what it held (no
        fields unless ``fields``: a destroy's values need not pass through Lua).

        ``owner`` is the user believed to own it; when wrong, the script says who does and
        changes nothing, and the next attempt declares that user's index.
        """
        for _ in range(_ATTEMPTS):
            keys: tuple[bytes, ...] = (self._key_of(sid),)
            if owner:
                keys += (self.index_key(owner),)
            take = package_script("session_take").eval(keys, (owner, sid, 1 if fields else 0))
            reply = yield from replicated(take, self.wait_replicas, "the session's deletion", _took)
            if reply is None:
                return None
            if int(reply[0]) == -1:
                owner = reply[1].decode()
                continue
            return int(reply[0]), int(reply[1]), reply[2]
        raise TransactionConflictError("the session's owner kept changing", attempts=_ATTEMPTS)

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
