"""A Django session engine on `SessionStore`: one hash per session, only changed fields written.

```python
SESSION_ENGINE = "redis_patterns.integrations.django.sessions"
REDIS_PATTERNS_SESSIONS = {  # every key optional
    "url": "redis://127.0.0.1:6379/0",  # or "redis+cluster://h1:7000,h2:7001"; default $REDIS_URL
    "namespace": "django-session",
    "idle_ttl": None,  # seconds; None: SESSION_COOKIE_AGE
    "absolute_ttl": None,  # seconds from creation, whatever the activity; None: no limit
    "serializer": "json",
    "on_backend_error": "raise",  # or "anonymous"
    "client": {},  # redis-py keyword arguments (socket_timeout, ...)
}
```

Django's contract holds (its own ``SessionTestsMixin`` passes): ``save`` raises ``UpdateError``
rather than resurrect a session deleted meanwhile, ``cycle_key`` gives a new id (our
``rotate``: the old id is dead at once), ``flush`` deletes, and ``set_expiry`` maps onto the
session's own idle lifetime or deadline. ``login()`` binds the session to the user
(``user_logged_in``), so `destroy_user` logs the user out everywhere. The async methods
(``aload``, ``asave``, ``acycle_key``, ...) run natively on `AsyncSessionStore`: sync and async
share one plan per operation.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured

from ..._async.sessions import AsyncSessionStore
from ..._core.sessions import KEEP, SessionCore, new_session_id
from ..._errors import BackendError, ConfigurationError
from ..._plan import Plan
from ..._serializers import Serializer, get_serializer
from ..._sync.sessions import SessionStore as _Store
from .._sessions_common import UNREACHABLE, check_on_backend_error, diff, snapshot, unreachable
from ._location import client_for

__all__ = [
    "SessionStore",
    "adestroy_user",
    "async_session_store",
    "destroy_user",
    "session_store",
]

SETTING: Final = "REDIS_PATTERNS_SESSIONS"
_OPTIONS: Final = frozenset(
    {"url", "namespace", "idle_ttl", "absolute_ttl", "serializer", "on_backend_error", "client"}
)
_EXPIRY: Final = "_session_expiry"  # where Django's set_expiry keeps its value

T = TypeVar("T")
# An operation of the engine: a plan over the store's core, run by the sync or async store.
Operation = Callable[[SessionCore], Plan[T]]


@dataclass(frozen=True, slots=True)
class _Config:
    url: str | None
    namespace: str
    idle_ttl: float
    absolute_ttl: float | None
    serializer: Serializer
    anonymous: bool
    client: Mapping[str, Any]

    def store_args(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "idle_ttl": self.idle_ttl,
            "absolute_ttl": self.absolute_ttl,
            "serializer": self.serializer,
        }


_lock = threading.Lock()
_configs: dict[str, _Config] = {}
_sync: dict[str, _Store] = {}
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncSessionStore]]
_async = weakref.WeakKeyDictionary()


def _setup() -> tuple[str, _Config]:
    """The settings as a cache key, and validated (once per distinct settings)."""
    raw = getattr(settings, SETTING, None) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{SETTING} must be a dict, not {type(raw).__name__}")
    key = repr((sorted(raw.items()), settings.SESSION_COOKIE_AGE))
    config = _configs.get(key)
    if config is not None:
        return key, config
    unknown = set(raw) - _OPTIONS
    if unknown:
        raise ImproperlyConfigured(f"{SETTING}: unknown keys {sorted(unknown)}")
    idle = raw.get("idle_ttl")
    try:
        config = _Config(
            url=raw.get("url"),
            namespace=raw.get("namespace", "django-session"),
            idle_ttl=settings.SESSION_COOKIE_AGE if idle is None else idle,
            absolute_ttl=raw.get("absolute_ttl"),
            serializer=get_serializer(raw.get("serializer", "json")),
            anonymous=check_on_backend_error(raw.get("on_backend_error", "raise")),
            client=dict(raw.get("client") or {}),
        )
        SessionCore(**config.store_args())  # the store's checks, before any connection is made
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from exc
    _configs[key] = config
    return key, config


def _make(config: _Config, *, asynchronous: bool) -> Any:
    client = client_for(config.url, dict(config.client), asynchronous=asynchronous, what=SETTING)
    try:
        if asynchronous:
            return AsyncSessionStore(client, **config.store_args())
        return _Store(client, **config.store_args())
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from exc


def session_store() -> _Store:
    """The process's `SessionStore` for the current settings (made on first use)."""
    key, config = _setup()
    with _lock:
        store = _sync.get(key)
        if store is None:
            store = _sync[key] = _make(config, asynchronous=False)
    return store


def async_session_store() -> AsyncSessionStore:
    """The `AsyncSessionStore` of the running event loop for the current settings.

    One per event loop: an asyncio client belongs to the loop it first ran in.
    """
    key, config = _setup()
    loop = asyncio.get_running_loop()
    with _lock:
        stores = _async.setdefault(loop, {})
        store = stores.get(key)
        if store is None:
            store = stores[key] = _make(config, asynchronous=True)
    return store


def _forget_stores() -> None:
    """Close and forget the sync stores' clients (tests: every test has servers of its own).
    Async stores go with their event loop; close them with ``store.client.aclose()``."""
    with _lock:
        for store in _sync.values():
            store.client.close()
        _sync.clear()
        _async.clear()
        _configs.clear()


def _user_id(user: Any) -> str:
    """A user's id as Django keeps it in the session (``_auth_user_id``)."""
    if isinstance(user, str | int) and not isinstance(user, bool):
        return str(user)
    return str(user._meta.pk.value_to_string(user))


def destroy_user(user: Any) -> int:
    """Log ``user`` out everywhere: delete every session it logged in with.

    Args:
        user: a user object, or its primary key (as ``request.session["_auth_user_id"]``).

    Returns:
        How many sessions were deleted.
    """
    return session_store().destroy_user(_user_id(user))


async def adestroy_user(user: Any) -> int:
    """`destroy_user` on the event loop's `AsyncSessionStore`."""
    return await async_session_store().destroy_user(_user_id(user))


def _field(key: object) -> str:
    """A Django session key as a field name: names the store reserves (empty, or starting with
    ``:``) get a backslash in front, as do names starting with one, so the mapping is injective."""
    if not isinstance(key, str):
        raise TypeError(f"session keys must be str, not {type(key).__name__}")
    return "\\" + key if not key or key[0] in ":\\" else key


def _key(field: str) -> str:
    return field[1:] if field.startswith("\\") else field


def _run(operation: Operation[T]) -> T:
    """Run ``operation`` on the process's `SessionStore`."""
    return session_store()._run(operation)


async def _arun(operation: Operation[T]) -> T:
    """Run ``operation`` on the event loop's `AsyncSessionStore`."""
    return await async_session_store()._run(operation)


class SessionStore(SessionBase):  # type: ignore[misc]  # Django ships no type hints
    """``request.session`` on redis-patterns' `SessionStore` (see the module docstring).

    Differences from Django's database engine, by design: reads slide the idle expiry (Django
    slides only when it saves), ids are ours (``<bucket>.<43 random chars>``, 256 bits, made by
    the server side only), and the store's ``absolute_ttl`` caps any ``set_expiry``.
    """

    _degraded = False  # the store was unreachable in this request ("anonymous"): write nothing
    # SessionBase's (a property and a lazily set attribute): annotations only, for mypy
    _session_key: str | None
    _session_cache: dict[str, Any]

    def __init__(self, session_key: str | None = None) -> None:
        self._settings_key, self._config = _setup()
        self._original: dict[str, bytes] | None = None  # the stored fields, serialized
        self._owner: str | None = None  # the stored session's user
        self._bind: Any = KEEP  # the user to bind at the next save (set at login)
        self._modified = False
        super().__init__(session_key)

    # Django's middleware saves, and sends the cookie again, when ``modified``; with the store
    # unreachable ("anonymous") it must do neither, so the cookie stays as the request found it.
    @property
    def modified(self) -> bool:
        return self._modified and not self._degraded

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value

    # -- plans (one per operation for sync and async: they compose the store core's plans) ------

    def _tolerate(self, exc: BackendError, during: str) -> None:
        if not self._config.anonymous:
            raise exc
        unreachable(exc, during)
        self._degraded = True

    def _load(self, core: SessionCore) -> Plan[dict[str, Any]]:
        self._original, self._owner = None, None
        if self._degraded:
            return {}
        try:
            loaded = yield from core.get(self.session_key)
        except UNREACHABLE as exc:
            self._tolerate(exc, "loading a session")
            return {}  # the key stays: Django would delete the cookie of an empty keyless session
        if loaded is None:
            self._session_key = None  # unknown or expired: a new session gets a new id
            return {}
        data = {_key(name): value for name, value in loaded.items()}
        self._original = snapshot(data, self._config.serializer.dumps)
        self._owner = loaded.user_id
        return data

    def _loaded(self, core: SessionCore) -> Plan[dict[str, Any]]:
        try:
            return self._session_cache
        except AttributeError:
            pass
        self.accessed = True
        self._session_cache = {}
        if self.session_key is not None:
            self._session_cache = yield from self._load(core)
        return self._session_cache

    def _own_expiry(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The store options for the session's own expiry (``set_expiry``); ``None`` when it
        has already passed."""
        value = data.get(_EXPIRY)
        if not value:  # None or 0: the store's lifetimes (0 also ends the cookie with the browser)
            return {"idle_ttl": None, "expires_in": None}
        if isinstance(value, int | float) and not isinstance(value, bool):
            # seconds of inactivity: the session's own idle lifetime
            return {"idle_ttl": value, "expires_in": None} if value > 0 else None
        # a date: a deadline whatever the activity, and no idle expiry before it
        age = self.get_expiry_age(expiry=value)
        return {"idle_ttl": age, "expires_in": age} if age > 0 else None

    def _create(self, core: SessionCore, data: dict[str, Any]) -> Plan[None]:
        options = self._own_expiry(data)
        self._original, self._owner = None, None
        if options is None:
            # born expired (set_expiry with a past date): nothing to store, and an id naming no
            # session, as if it had been created and had expired at once
            self._session_key = new_session_id(None)
            return
        user = None if self._bind is KEEP else self._bind
        fields = {_field(k): v for k, v in data.items()}
        try:
            made = yield from core.create(fields, user, **options)
        except UNREACHABLE as exc:
            self._tolerate(exc, "creating a session")
            # Django's middleware sends whatever key this leaves: one that names no session
            self._session_key = new_session_id(None)
            return
        self._session_key = made.id
        self._original = snapshot(data, self._config.serializer.dumps)
        self._owner, self._bind = user, KEEP

    def _save(self, core: SessionCore, must_create: bool) -> Plan[None]:
        if self._degraded:
            return
        if self.session_key is None or must_create:
            yield from self._create(core, self._get_session(no_load=True))
            return
        data = yield from self._loaded(core)
        sid = self.session_key
        if self._degraded:
            return
        if sid is None:  # loading found it gone: ended before this request could save it
            raise UpdateError
        if self._original is None:
            # emptied by clear() before it was ever read: compare with what is stored
            try:
                stored = yield from core.get(sid)
            except UNREACHABLE as exc:
                self._tolerate(exc, "saving a session")
                return
            if stored is None:
                raise UpdateError
            self._original = snapshot(
                {_key(k): v for k, v in stored.items()}, self._config.serializer.dumps
            )
            self._owner = stored.user_id
        dumps = self._config.serializer.dumps
        changed, deleted = diff(data, self._original, dumps)
        options: dict[str, Any] | None = {}
        if _EXPIRY in changed or _EXPIRY in deleted:
            options = self._own_expiry(data)
        try:
            if options is None:  # its own expiry is in the past: it ends now
                yield from core.destroy(sid)
                return
            fields = {_field(k): v for k, v in changed.items()}
            doomed = [_field(k) for k in deleted]
            exists = yield from core.write(sid, fields, doomed, **options)
            if not exists:
                raise UpdateError  # deleted meanwhile (a logout elsewhere): never resurrect it
            self._original = snapshot(data, dumps)
            if self._bind is not KEEP and self._bind != self._owner:
                # the login's user: a new id in the user's bucket, indexed for destroy_user
                new_sid = yield from core.rotate(sid, self._bind)
                if new_sid is None:
                    raise UpdateError
                self._session_key, self._owner = new_sid, self._bind
            self._bind = KEEP
        except UNREACHABLE as exc:
            self._tolerate(exc, "saving a session")

    def _cycle(self, core: SessionCore) -> Plan[None]:
        data = yield from self._loaded(core)
        sid = self.session_key
        if self._degraded:
            return
        if sid is not None and self._original is not None:
            try:
                new_sid = yield from core.rotate(sid, KEEP)  # keeps the user: a privilege change
            except UNREACHABLE as exc:
                self._tolerate(exc, "rotating a session")
                return
            if new_sid is not None:
                self._session_key = new_sid
                self.modified = True
                return
            sid = None  # it ended meanwhile: nothing left to delete
        yield from self._create(core, data)
        if sid is not None:  # emptied before it was ever read: the old id must die too
            yield from self._delete(core, sid)
        self.modified = True

    def _delete(self, core: SessionCore, session_key: str | None) -> Plan[None]:
        if session_key is None:
            session_key = self.session_key
            if session_key is None:
                return
        if self._degraded:
            return
        try:
            yield from core.destroy(session_key)
        except UNREACHABLE as exc:
            self._tolerate(exc, "deleting a session")

    def _flush(self, core: SessionCore) -> Plan[None]:
        self.clear()
        yield from self._delete(core, None)
        if self._degraded:
            # the session could not be deleted: keep its key, so the cookie stays and the
            # logout visibly did not happen (rather than a cookie gone and a session alive)
            return
        self._session_key = None
        self._original, self._owner, self._bind = None, None, KEEP

    def _exists(self, core: SessionCore, session_key: str | None) -> Plan[bool]:
        if self._degraded:
            return False
        try:
            ttl = yield from core.ttl(session_key)  # PTTL: does not slide it
        except UNREACHABLE as exc:
            self._tolerate(exc, "checking a session")
            return False
        return ttl is not None

    # -- Django's SessionBase API ---------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        return _run(self._load)

    async def aload(self) -> dict[str, Any]:
        return await _arun(self._load)

    def exists(self, session_key: str | None) -> bool:
        return _run(lambda core: self._exists(core, session_key))

    async def aexists(self, session_key: str | None) -> bool:
        return await _arun(lambda core: self._exists(core, session_key))

    def create(self) -> None:
        _run(lambda core: self._create(core, self._get_session(no_load=True)))
        self.modified = True

    async def acreate(self) -> None:
        await _arun(lambda core: self._create(core, self._get_session(no_load=True)))
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        _run(lambda core: self._save(core, must_create))

    async def asave(self, must_create: bool = False) -> None:
        await _arun(lambda core: self._save(core, must_create))

    def delete(self, session_key: str | None = None) -> None:
        _run(lambda core: self._delete(core, session_key))

    async def adelete(self, session_key: str | None = None) -> None:
        await _arun(lambda core: self._delete(core, session_key))

    def cycle_key(self) -> None:
        _run(self._cycle)

    async def acycle_key(self) -> None:
        await _arun(self._cycle)

    def flush(self) -> None:
        _run(self._flush)

    async def aflush(self) -> None:
        await _arun(self._flush)

    def _get_new_session_key(self) -> str:
        # 256 random bits cannot collide: no round trip to check (the store checks anyway)
        return new_session_id(None)

    async def _aget_new_session_key(self) -> str:
        return new_session_id(None)

    def get_session_cookie_age(self) -> int:
        """The cookie's ``Max-Age``: the idle lifetime (``SESSION_COOKIE_AGE`` by default)."""
        return int(self._config.idle_ttl)

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the server expires sessions itself (``clearsessions`` is a no-op)."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do, as `clear_expired`."""


def _on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``login()`` stored the user in the session: bind the session to it at the next save (a
    new id in the user's bucket, indexed for `destroy_user`)."""
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore):
        # the id exactly as login() just stored it (``user._meta.pk.value_to_string(user)``)
        uid = session.get(SESSION_KEY)
        session._bind = _user_id(user) if uid is None else str(uid)


def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``logout()`` flushes the session next (deleting it and its index entry); a binding made
    earlier in this request must not follow the data into a new session."""
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore):
        session._bind = KEEP


user_logged_in.connect(_on_login, dispatch_uid="redis_patterns.sessions.login")
user_logged_out.connect(_on_logout, dispatch_uid="redis_patterns.sessions.logout")
