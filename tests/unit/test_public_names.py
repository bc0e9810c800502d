"""``redis_patterns.__all__`` is exactly the public names: each exists, nothing public is left
out of it, the product contract's names are all there, and every sync facade has its async twin."""

from __future__ import annotations

import inspect
import types

import redis_patterns

# The public names of the product contract (DESIGN.md, section 1), sync side.
CONTRACT = [
    "Lock",
    "Redlock",
    "FencedStore",
    "LockNotOwnedError",
    "StaleFenceError",
    "FixedWindow",
    "SlidingLog",
    "SlidingWindow",
    "TokenBucket",
    "GCRA",
    "Decision",
    "Cache",
    "WriteThrough",
    "WriteBehind",
    "SessionStore",
    "Session",
    "Leaderboard",
    "Entry",
    "Page",
    "Publisher",
    "Subscriber",
    "Message",
    "StreamQueue",
    "Worker",
    "StreamMessage",
    "Script",
    "transaction",
    "BoundedCounter",
    "connect",
    "EmbeddedServer",
    "RedisPatternsError",
    "ConfigurationError",
    "BackendError",
    "BackendUnavailableError",
    "BackendTimeoutError",
    "ScriptError",
    "LockError",
    "LockTimeoutError",
    "RateLimitedError",
    "TransactionConflictError",
    "QueueError",
]


def _public_attributes() -> set[str]:
    """The package's own public objects: not modules, not re-exported stdlib or typing names."""
    found = set()
    for name, value in vars(redis_patterns).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        module = getattr(value, "__module__", None) or ""
        if module.startswith("redis_patterns") or not callable(value):
            found.add(name)
    return found


def test_every_name_in_all_exists_once() -> None:
    names = redis_patterns.__all__
    assert len(names) == len(set(names))
    assert [n for n in names if not hasattr(redis_patterns, n)] == []


def test_all_lists_every_public_object_of_the_package() -> None:
    assert _public_attributes() - set(redis_patterns.__all__) == set()


def test_the_contracts_names_are_public() -> None:
    assert [n for n in CONTRACT if n not in redis_patterns.__all__] == []


def test_every_sync_facade_has_its_async_twin_and_back() -> None:
    names = set(redis_patterns.__all__)
    facades = {
        name
        for name in names
        if inspect.isclass(obj := getattr(redis_patterns, name))
        and obj.__module__.startswith("redis_patterns._sync.")
    }
    assert facades, "no sync facade found: the check below would pass on nothing"
    assert sorted(f for f in facades if f"Async{f}" not in names) == []
    asynchronous = {n for n in names if n.startswith("Async")}
    assert sorted(a for a in asynchronous if a.removeprefix("Async") not in names) == []
