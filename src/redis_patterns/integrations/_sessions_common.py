"""What the ASGI, Flask and Django session integrations share: cookie rules, the per-request
session and the changes it hands to `SessionStore.commit`, and what to do when the server is
unreachable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .. import _logging
from .._core.sessions import KEEP, UNTOUCHED, Session, SessionChanges
from .._core.sessions import SessionOutcome as Outcome
from .._errors import BackendError, BackendTimeoutError, BackendUnavailableError, ConfigurationError

__all__ = [
    "UNREACHABLE",
    "UNTOUCHED",
    "CookieSettings",
    "OnBackendError",
    "Outcome",
    "RequestSession",
    "check_on_backend_error",
    "diff",
    "snapshot",
    "unreachable",
]

log = logging.getLogger("redis_patterns.sessions")

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

    def _commit_changes(self, had_cookie: bool) -> SessionChanges | None:
        """What this request did, for `SessionStore.commit`; ``None`` when it must write
        nothing (the store was unreachable when loading: nothing was loaded)."""
        if self.degraded:
            return None
        changed, deleted = self.changes()
        return SessionChanges(
            self._loaded,
            dict(self._data),
            changed,
            deleted,
            destroy=self._destroy,
            rotate=self._rotate_to,
            had_cookie=had_cookie,
        )
