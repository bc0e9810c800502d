"""Client-supplied identities as rate-limit keys: hostile or missing ones never fail a request.

Shared by every web integration (ASGI, FastAPI, Flask, Django), free of any framework, and
public for anyone writing their own. A limiter refuses a bad key with `ConfigurationError`
(programmer input); a header or a query parameter is the client's input, so it is normalized
instead: kept verbatim when it is a valid key, else replaced by a digest of its bytes.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable

from .._errors import ConfigurationError
from .._keys import check_name
from .._validate import check_int

__all__ = [
    "EXEMPT",
    "HASHED_PREFIX",
    "Exempt",
    "forwarded_client",
    "limiter_key",
    "normalize_key",
]

HASHED_PREFIX = b"#sha256:"


class Exempt(enum.Enum):
    """The type of `EXEMPT`, for annotations: ``def key(conn) -> str | Exempt | None``."""

    EXEMPT = "EXEMPT"

    def __repr__(self) -> str:
        return "EXEMPT"


EXEMPT = Exempt.EXEMPT
"""Returned by a key function, this request is not limited (and gets no ``RateLimit-*``)."""


def _raw_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")  # what `check_name` does with a str
    except UnicodeEncodeError:  # a lone surrogate outside the escape range: keep its code point
        return value.encode("utf-8", "surrogatepass")


def normalize_key(value: str | bytes) -> bytes:
    """A valid limiter key for any client-supplied ``value``, never an error.

    Kept verbatim (as UTF-8 bytes) when the limiters accept it as it is — 1 to 1024 bytes,
    no ``{``, ``}`` or NUL — and it does not start with ``#sha256:``. Anything else (braces,
    NUL, empty, over 1 KiB, or starting with ``#sha256:``) becomes ``#sha256:`` followed by
    the hex SHA-256 of its bytes. No verbatim key starts with that marker, so a hashed key
    never shares state with a verbatim one; two different values share a key only if their
    SHA-256 digests collide.

    Raises:
        TypeError: ``value`` is not str or bytes.
    """
    if isinstance(value, bool) or not isinstance(value, str | bytes):
        raise TypeError(f"a rate-limit key must be str or bytes, not {type(value).__name__}")
    raw = _raw_bytes(value)
    if not raw.startswith(HASHED_PREFIX):
        try:
            return check_name(raw, "key")
        except ConfigurationError:
            pass
    return HASHED_PREFIX + hashlib.sha256(raw).hexdigest().encode()


def limiter_key(who: object, fallback: Callable[[], str | bytes]) -> bytes | None:
    """The key to limit for a key function's answer ``who``; ``None`` means "exempt".

    `EXEMPT` exempts the request. ``None`` or an empty value means the key function could not
    identify the caller: ``fallback()`` (the client address) is limited instead, so a missing
    header is never a way around the limit. Everything else goes through `normalize_key`.

    Raises:
        TypeError: ``who`` is neither str, bytes, None nor `EXEMPT` (a bug in the key function).
    """
    if who is EXEMPT:
        return None
    if who is None or who == "" or who == b"":
        who = fallback()
    if isinstance(who, bool) or not isinstance(who, str | bytes):
        raise TypeError(
            f"the rate-limit key function returned {type(who).__name__}; "
            "return str, bytes, None (use the client address) or EXEMPT"
        )
    return normalize_key(who)


def forwarded_client(header: str | None, trusted_proxies: int) -> str | None:
    """The client address in an ``X-Forwarded-For`` value written by ``trusted_proxies`` proxies.

    Each proxy appends the address it received the request from, so the client's own address
    is the ``trusted_proxies``-th entry from the right; entries further left came from the
    client and are never trusted. ``None`` when the header is missing or has fewer entries
    (the request did not come through all the proxies): use the peer address then.

    Raises:
        ConfigurationError: ``trusted_proxies`` is not an int >= 1.
    """
    check_int(trusted_proxies, "trusted_proxies", minimum=1)
    if not header:
        return None
    entries = [entry.strip() for entry in header.split(",")]
    entries = [entry for entry in entries if entry]
    if len(entries) < trusted_proxies:
        return None
    return entries[-trusted_proxies]
