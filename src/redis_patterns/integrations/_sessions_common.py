"""What the ASGI, Flask and Django session integrations share: cookie rules, the per-request
session, the change diff, the commit plan (which store calls a finished request needs), the
drivers that perform such calls, and what to do when the server is unreachable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from .. import _logging
from .._async.sessions import AsyncSessionStore
from .._core.sessions import KEEP, Session
from .._errors import BackendError, BackendTimeoutError, BackendUnavailableError, ConfigurationError
from .._sync.sessions import SessionStore

__all__ = [
    "UNREACHABLE",
    "UNTOUCHED",
    "CookieSettings",
    "OnBackendError",
    "Outcome",
    "RequestSession",
    "StoreCall",
    "adrive",
    "check_on_backend_error",
    "commit",
    "diff",
    "drive",
    "snapshot",
    "unreachable",
]

log = logging.getLogger("redis_patterns.sessions")

T = TypeVar("T")
OnBackendError = Literal["raise", "anonymous"]
# The failures "anonymous" covers: the server cannot be reached or did not answer in time.
# Anything else (a corrupt field, an ACL refusal, a script error) is a bug to see, never hidden.
UNREACHABLE: Final = (BackendUnavailableError, BackendTimeoutError)


def check_on_backend_error(value: object) -> bool:
    """Validate ``on_backend_error``; ``True`` means "anonymous"."""
    if value not in ("raise", "anonymous"):
        raise ConfigurationError(f"on_backend_error must be 'raise' or 'anonymous', not {value!r}")
    return value == "anonymous"


def unreachable(exc: BackendError, during: str) -> None:
    """Log that a request went on with an empty anonymous session (coalesced: one line a minute
    per kind of failure, with the count of the ones it stands for)."""
    _logging.coalesced(
        log,
        ("unreachable", _logging.error_kind(exc)),
        "session store unreachable while %s (%s: %s): the request goes on with an empty"
        " anonymous session; nothing is written and the cookie is left alone",
        during,
        type(exc).__name__,
        exc,
    )


def snapshot(data: Mapping[str, Any], dumps: Callable[[Any], bytes]) -> dict[str, bytes]:
    """Each value serialized: what `diff` compares against later."""
    return {k: dumps(v) for k, v in data.items()}


def diff(
    data: Mapping[str, Any], original: Mapping[str, bytes], dumps: Callable[[Any], bytes]
) -> tuple[dict[str, Any], list[str]]:
    """The fields to write and the fields to delete to turn ``original`` into ``data``.

    Values are compared serialized, so nested mutations (``session["cart"].append(x)``) count.
    """
    changed = {k: v for k, v in data.items() if k not in original or dumps(v) != original[k]}
    return changed, [k for k in original if k not in data]


@dataclass(frozen=True, slots=True)
class CookieSettings:
    """Validated cookie attributes; ``name`` already carries the ``__Host-`` prefix if used."""

    name: str
    secure: bool
    samesite: str
    path: str
    domain: str | None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        secure: bool,
        samesite: str,
        path: str,
        domain: str | None,
        host_prefix: bool | None,
    ) -> CookieSettings:
        if not isinstance(name, str) or not name or any(c in name for c in ' ;,="\t\r\n'):
            raise ConfigurationError(f"cookie_name {name!r} is not a valid cookie name")
        samesite = str(samesite).capitalize()
        if samesite not in ("Lax", "Strict", "None"):
            raise ConfigurationError(
                f"samesite must be 'lax', 'strict' or 'none', not {samesite!r}"
            )
        if samesite == "None" and not secure:
            raise ConfigurationError("samesite='none' needs secure=True (browsers refuse it)")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', got {path!r}")
        if name.startswith("__Host-"):  # a prefix written into the name obeys the same rules
            host_prefix = True
        if name.startswith("__Secure-") and not secure:
            raise ConfigurationError("a __Secure- cookie name needs secure=True (browsers drop it)")
        if host_prefix is None:  # on whenever the browser would accept it
            host_prefix = (
                secure and domain is None and path == "/" and not name.startswith("__Secure-")
            )
        if host_prefix:
            if not secure or domain is not None or path != "/":
                raise ConfigurationError(
                    "the __Host- prefix needs secure=True, path='/' and no domain"
                )
            if not name.startswith("__Host-"):
                name = "__Host-" + name
        return cls(name, bool(secure), samesite, path, domain)

    def header(self, value: str, max_age: int | None) -> str:
        """A ``Set-Cookie`` value; ``max_age`` 0 deletes the cookie, ``None`` makes it a browser
        session cookie (no ``Max-Age``: the browser forgets it when it closes)."""
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max(0, max_age)}")
            if max_age <= 0:
                parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        parts.append(f"SameSite={self.samesite}")
        return "; ".join(parts)


class RequestSession(MutableMapping[str, Any]):
    """The session of one request: a mutable mapping, written back when the response starts.

    Only fields whose serialized value changed (or that were deleted) are written, so two
    concurrent requests changing different fields both keep their change. Nested mutations
    (``session["cart"].append(x)``) are detected too: values are compared serialized.

    ``rotate(user_id=...)`` at login and ``destroy()`` (or ``clear()``) at logout take effect at
    the end of the request. If the loaded session ends before that (logged out or rotated
    elsewhere, expired), nothing is written back and no new session is made from it.
    """

    def __init__(
        self, loaded: Session | None, dumps: Callable[[Any], bytes], *, degraded: bool = False
    ) -> None:
        self._set_loaded(loaded, dumps, degraded=degraded)

    def _set_loaded(
        self, loaded: Session | None, dumps: Callable[[Any], bytes], *, degraded: bool = False
    ) -> None:
        self._loaded = loaded
        self._dumps = dumps
        self._data: dict[str, Any] = dict(loaded) if loaded is not None else {}
        self._original = snapshot(self._data, dumps)
        self._rotate_to: Any = None  # None: no rotation; KEEP or a user id / None in a tuple
        self._destroy = False
        # the store was unreachable when loading ("anonymous"): write nothing back
        self.degraded = degraded

    def _ensure(self) -> None:
        """Hook for lazy loading (Flask); the ASGI session is loaded up front."""

    @property
    def id(self) -> str | None:
        """The session id, or ``None`` before the session is first written."""
        self._ensure()
        return None if self._loaded is None else self._loaded.id

    @property
    def user_id(self) -> str | None:
        """The user the session belongs to, or ``None``."""
        self._ensure()
        return None if self._loaded is None else self._loaded.user_id

    def rotate(self, user_id: Any = KEEP) -> None:
        """Give the session a new id at the end of this request (call it at login).

        Args:
            user_id: bind the session to this user; ``None`` makes it anonymous; omitted keeps
                the current user.
        """
        self._ensure()
        self._rotate_to = (user_id,)

    def destroy(self) -> None:
        """Delete the session at the end of this request (log out); the cookie is removed.

        Fields set afterwards in the same request go into a new session with a new id.
        """
        self._ensure()
        self._destroy = True
        self._data.clear()

    def clear(self) -> None:
        """Like `destroy`: an emptied session is deleted, never kept as a valid empty one."""
        self.destroy()

    def __getitem__(self, key: str) -> Any:
        self._ensure()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._ensure()
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._ensure()
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        return iter(self._data)

    def __len__(self) -> int:
        self._ensure()
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} user_id={self.user_id!r} fields={sorted(self._data)!r}>"

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """The fields to write and the fields to delete, compared with what was loaded."""
        return diff(self._data, self._original, self._dumps)


@dataclass(frozen=True, slots=True)
class StoreCall:
    """One store method call for the driver to perform (sync or ``await``)."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the response must do with the cookie: set it to ``sid`` or delete it, or nothing.

    ``refresh_only``: the cookie would be sent again unchanged (same id, nothing written), only
    to renew its ``Max-Age``; an app may choose not to.
    """

    sid: str | None
    max_age: int
    touch_cookie: bool
    refresh_only: bool = False


UNTOUCHED: Final = Outcome(None, 0, touch_cookie=False)
Commit = Generator[StoreCall, Any, Outcome]


def drive(store: SessionStore, calls: Generator[StoreCall, Any, T]) -> T:
    """Perform ``calls`` on a sync store; a store error is thrown into the generator."""
    try:
        call = next(calls)
        while True:
            try:
                result = getattr(store, call.method)(*call.args, **call.kwargs)
            except BackendError as exc:
                call = calls.throw(exc)
            else:
                call = calls.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def adrive(store: AsyncSessionStore, calls: Generator[StoreCall, Any, T]) -> T:
    """Perform ``calls`` on an asyncio store; a store error is thrown into the generator."""
    try:
        call = next(calls)
        while True:
            try:
                result = await getattr(store, call.method)(*call.args, **call.kwargs)
            except BackendError as exc:
                call = calls.throw(exc)
            else:
                call = calls.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def commit(session: RequestSession, had_cookie: bool) -> Commit:
    """The store calls that persist ``session`` at the end of a request, and the cookie outcome.

    Drivers run it like a plan: ``call = next(gen)``; perform it; ``gen.send(result)``.

    A request that loaded no session creates one only if it put something in it (or logged
    in). Fields set after ``destroy()`` / ``clear()`` go into a brand-new session. A request
    whose loaded session ended meanwhile (destroyed, rotated elsewhere, expired) writes nothing
    more and leaves the cookie alone: it never carries anything into a new session.
    """
    if session.degraded:
        return UNTOUCHED  # the store was unreachable: nothing was loaded, nothing is written
    loaded = session._loaded
    delete_cookie = Outcome(None, 0, touch_cookie=had_cookie)
    rotate = session._rotate_to
    if session._destroy:
        if loaded is not None:
            yield StoreCall("destroy", (loaded.id,), {})
        # what was set after clear() (``session.clear(); session["user"] = ...`` at login)
        # goes into a brand-new session, under a new id
        loaded = None
    changed, deleted = session.changes()
    if loaded is None:
        if not session._data and rotate is None:
            return delete_cookie  # nothing to keep; a stale or forged cookie is dropped
        user = None if rotate is None or rotate[0] is KEEP else rotate[0]
        created: Session = yield StoreCall("create", (dict(session._data),), {"user_id": user})
        return Outcome(created.id, int(created.ttl), touch_cookie=True)
    sid, ttl = loaded.id, loaded.ttl
    wrote = bool(changed or deleted)
    if wrote:
        exists = yield StoreCall("update", (sid, changed), {"delete": deleted})
        if not exists:
            return _gone(loaded, f"fields set {sorted(changed)}, deleted {sorted(deleted)}")
    if rotate is not None:
        new_sid = yield StoreCall("rotate", (sid,), {"user_id": rotate[0]})
        if new_sid is None:
            return _gone(loaded, "the rotation")
        sid = new_sid
    return Outcome(sid, int(ttl), touch_cookie=True, refresh_only=sid == loaded.id and not wrote)


def _gone(loaded: Session, dropped: str) -> Outcome:
    """The session this request loaded ended during the request: destroyed (logout here or
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
