"""The one place keys are built: ``{<pattern>:<name>}:<suffix>``, cluster-safe by hash tag."""

from __future__ import annotations

from ._errors import ConfigurationError, ConfigurationTypeError

__all__ = [
    "MAX_GLOB_BYTES",
    "MAX_NAME_BYTES",
    "check_name",
    "glob_match",
    "key_parts",
    "make_key",
]

MAX_NAME_BYTES = 1024
# SCAN MATCH / PSUBSCRIBE patterns built from user input are capped (CVE-2024-31228: a long
# pattern with many wildcards makes the server's matcher take very long).
MAX_GLOB_BYTES = 256
MAX_WILDCARDS = 8
_GLOB_SPECIAL = frozenset(b"*?[]\\")
_FORBIDDEN = (b"{", b"}", b"\x00")


def check_name(value: object, what: str = "name", *, raw_key: bool = False) -> bytes:
    """Validate a user-supplied name and return it as bytes (str is encoded as UTF-8).

    Braces are refused because they would change the key's hash tag (and so its cluster slot)
    and let one name alias another pattern's keys; NUL is refused because it is almost always
    a bug. ``:`` is allowed: the name sits inside the braces, so it cannot collide with the
    suffixes that follow them. ``raw_key=True`` is for a complete key the user owns (braces
    allowed: a hash tag is theirs to choose).
    """
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise ConfigurationTypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if not raw:
        raise ConfigurationError(f"{what} must not be empty")
    if len(raw) > MAX_NAME_BYTES:
        raise ConfigurationError(f"{what} is {len(raw)} bytes; the maximum is {MAX_NAME_BYTES}")
    for bad in _FORBIDDEN[2:] if raw_key else _FORBIDDEN:
        if bad in raw:
            raise ConfigurationError(f"{what} must not contain {bad!r} (got {value!r})")
    return raw


def make_key(pattern: str, name: bytes, suffix: str | None = None) -> bytes:
    """Build ``{pattern:name}`` or ``{pattern:name}:suffix``; all keys of one object share a slot.

    ``name`` must come from `check_name`. Example: ``make_key("lock", b"orders:42", "fence")``
    is ``b"{lock:orders:42}:fence"``.
    """
    key = b"{" + pattern.encode() + b":" + name + b"}"
    return key if suffix is None else key + b":" + suffix.encode()


def key_parts(pattern: str, suffix: str | None = None) -> tuple[bytes, bytes]:
    """``(head, tail)`` such that ``head + name + tail == make_key(pattern, name, suffix)``.

    For hot paths that build one key per call (a limiter hit): one concatenation per key.
    """
    head, tail = make_key(pattern, b"\x00", suffix).split(b"\x00")
    return head, tail


def glob_match(value: object, what: str = "pattern", *, wildcards: bool = True) -> bytes:
    """User input as a glob for ``SCAN MATCH``: ``? [ ] \\`` escaped, so they match themselves.

    With ``wildcards``, ``*`` stays a wildcard (at most `MAX_WILDCARDS` of them); otherwise it
    is escaped too. The input is at most `MAX_GLOB_BYTES` bytes and may not contain braces or
    NUL (they are not part of any name).

    Raises:
        ConfigurationError: too long, too many ``*``, braces or NUL, or not str / bytes.
    """
    raw = check_name(value, what)
    if len(raw) > MAX_GLOB_BYTES:
        raise ConfigurationError(f"{what} is {len(raw)} bytes; the maximum is {MAX_GLOB_BYTES}")
    if wildcards and raw.count(b"*") > MAX_WILDCARDS:
        raise ConfigurationError(f"{what} has more than {MAX_WILDCARDS} '*' wildcards")
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL and not (wildcards and byte == ord("*")):
            out.append(ord("\\"))
        out.append(byte)
    return bytes(out)
