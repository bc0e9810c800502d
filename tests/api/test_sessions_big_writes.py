"""Session writes of big values (issue 16): from `BIG_WRITE_BYTES` of values up, `update` (and
a request's commit) sends MULTI / HSET / [HDEL] / PEXPIRE NX / session_write as commit / EXEC in
one round trip, the values never passing through Lua, with the outcomes of the one script
(``session_write.lua``), which smaller writes keep.

The outcome tests run each case down both paths (``path``: the block forced for any size, or
the script for any size). A session that ended is never resurrected: the commit deletes what
the HSET recreated, inside the atomic block, and a hash without ``:c`` (what a block whose
commit did not run leaves) is no session for any operation.

Creates from `BIG_CREATE_BYTES` up (the last part): MULTI / HSET scratch / PEXPIRE scratch /
session_create with no fields, which renames the scratch hash into the session / EXEC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError

from redis_patterns import (
    AsyncSessionStore,
    BackendError,
    EmbeddedServer,
    SessionChanges,
    SessionStore,
    connect,
)
from redis_patterns._core.sessions import _LEFTOVER_MS, KEEP
from redis_patterns._core.sessions_keys import BIG_CREATE_BYTES, BIG_WRITE_BYTES
from redis_patterns._plan import Command, Eval, Multi
from redis_patterns._script import package_script
from redis_patterns.testing import FaultProxy
from redis_patterns.testing.pytest_plugin import Backend

BIG = "b" * (2 * BIG_WRITE_BYTES)  # JSON text: the value is this and two quotes
BLOCK = ["MULTI", "HSET", "PEXPIRE", "EVALSHA", "EXEC"]
BIG_CREATE = "c" * (2 * BIG_CREATE_BYTES)
CREATE_BLOCK = ["MULTI", "HSET", "PEXPIRE", "EVALSHA", "EXEC"]  # into the scratch hash


@pytest.fixture(params=["script", "block"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _store(client: Any, prefix: str, path: str = "", **options: Any) -> SessionStore:
    store = SessionStore(client, prefix, options.pop("idle_ttl", 60), **options)
    if path:
        # Whatever the size: the blocks (threshold 1 byte) or the one script (never).
        store._core.big_write_bytes = 1 if path == "block" else 2**62
        store._core.big_create_bytes = store._core.big_write_bytes
    return store


def _key(store: SessionStore | AsyncSessionStore, sid: str) -> bytes:
    return store._core._key_of(sid)


def _keys_without_ttl(backend: Backend, prefix: str) -> list[bytes]:
    client = backend.client()
    return [key for key in backend.scan(f"*{prefix}*") if client.pttl(key) == -1]


# --- exact commands, one round trip ----------------------------------------------------------


def test_a_big_update_is_one_block(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix)
    sid = store.create({"small": 1}).id
    store.update(sid, {"small": 2})  # the script cached on the session's node
    with backend.counter() as seen:
        assert store.update(sid, {"blob": BIG}) is True
    assert seen.names == BLOCK
    assert [c.name for c in seen.inside_scripts] == ["HEXISTS", "PTTL"]
    assert not any(len(arg) > 1024 for c in seen.inside_scripts for arg in c.args)
    with backend.counter() as seen:
        assert store.update(sid, {"blob": BIG + "!"}, delete=["small"]) is True
    assert seen.names == ["MULTI", "HSET", "HDEL", "PEXPIRE", "EVALSHA", "EXEC"]
    with backend.counter() as seen:
        assert store.update(sid, {"small": 3}) is True
    assert seen.names == ["EVALSHA"]
    session = store.get(sid)
    assert session is not None
    assert dict(session) == {"blob": BIG + "!", "small": 3}


def test_a_big_update_is_one_round_trip(
    valkey_server: EmbeddedServer, fault_proxy: Callable[..., FaultProxy], prefix: str
) -> None:
    proxy = fault_proxy(valkey_server)
    with connect(proxy.url, driver_info=None) as client:
        store = _store(client, prefix)
        sid = store.create({"blob": "small"}).id
        store.update(sid, {"blob": BIG})
        before = proxy.stats.forwarded_requests
        assert store.update(sid, {"blob": BIG + "!"}) is True
        assert proxy.stats.forwarded_requests - before == 1
        session = store.get(sid)
        assert session is not None
        assert session["blob"] == BIG + "!"


def test_a_request_commit_of_a_big_field_is_one_block(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix)
    loaded = store.get(store.create({"cart": []}).id)
    assert loaded is not None
    store.update(loaded.id, {"cart": []})
    changes = SessionChanges(loaded=loaded, data={"cart": [BIG]}, changed={"cart": [BIG]})
    with backend.counter() as seen:
        outcome = store.commit(changes)
    assert seen.names == BLOCK
    assert outcome.sid == loaded.id
    session = store.get(loaded.id)
    assert session is not None
    assert session["cart"] == [BIG]


async def test_async_big_update_and_commit(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, prefix, 60)
    sid = (await store.create({"small": 1})).id
    assert await store.update(sid, {"blob": BIG}) is True
    with backend.counter() as seen:
        assert await store.update(sid, {"blob": BIG + "a"}) is True
    assert seen.names == BLOCK
    loaded = await store.get(sid)
    assert loaded is not None
    assert loaded["blob"] == BIG + "a"
    await store.destroy(sid)
    changes = SessionChanges(loaded=loaded, data={"blob": BIG}, changed={"blob": BIG})
    outcome = await store.commit(changes)
    assert not outcome.touch_cookie  # ended during the request: dropped, cookie left alone
    assert await client.exists(_key(store, sid)) == 0
    await client.aclose()


# --- the same outcomes as the script ---------------------------------------------------------


def test_fields_set_and_deleted_ttl_left_alone(client: Any, prefix: str, path: str) -> None:
    store = _store(client, prefix, path, idle_ttl=100)
    sid = store.create({"a": 1, "b": 2, "c": 3}).id
    key = _key(store, sid)
    client.pexpire(key, 50_000)  # a field write leaves the TTL as it is
    assert store.update(sid, {"a": BIG, "d": [4]}, delete=["b", "missing"]) is True
    assert 40_000 < client.pttl(key) <= 50_000
    session = store.get(sid)
    assert session is not None
    assert dict(session) == {"a": BIG, "c": 3, "d": [4]}
    assert session.created_at > 0


def test_own_expiry_changes_in_the_same_write(client: Any, prefix: str, path: str) -> None:
    store = _store(client, prefix, path, idle_ttl=100, absolute_ttl=1000)
    sid = store.create({"a": 1}).id
    key = _key(store, sid)
    assert store.update(sid, {"a": BIG}, idle_ttl=20) is True
    assert 15_000 < client.pttl(key) <= 20_000
    assert client.hget(key, ":i") == b"20000"
    assert store.update(sid, {"a": BIG + "1"}, expires_in=5) is True
    assert 0 < client.pttl(key) <= 5_000
    assert client.hexists(key, ":d")
    assert store.update(sid, {"a": BIG + "2"}, idle_ttl=None, expires_in=None) is True
    assert 90_000 < client.pttl(key) <= 100_000
    assert not client.hexists(key, ":i")
    assert not client.hexists(key, ":d")
    session = store.get(sid)
    assert session is not None
    assert session["a"] == BIG + "2"


def test_a_deadline_already_over_ends_the_session(client: Any, prefix: str, path: str) -> None:
    store = _store(client, prefix, path, idle_ttl=100, absolute_ttl=1000)
    sid = store.create({"a": 1}).id
    client.hset(_key(store, sid), ":a", 1)  # the absolute expiry passed long ago
    assert store.update(sid, {"a": BIG}, idle_ttl=50) is True  # the session existed...
    assert client.exists(_key(store, sid)) == 0  # ...and ends, as a read would find


@pytest.mark.parametrize("end", ["destroy", "expire", "destroy_user", "rotate"])
def test_a_session_that_ended_is_never_resurrected(
    backend: Backend, prefix: str, path: str, end: str
) -> None:
    client = backend.client()
    store = _store(client, prefix, path)
    user = "alice" if end == "destroy_user" else None
    sid = store.create({"a": 1}, user_id=user).id
    key = _key(store, sid)
    if end == "destroy":
        assert store.destroy(sid)
    elif end == "expire":
        client.pexpire(key, 1)
        assert _wait(lambda: client.exists(key) == 0)
    elif end == "destroy_user":
        assert store.destroy_user("alice") == 1
    else:
        assert store.rotate(sid) is not None
    assert store.update(sid, {"a": BIG, "b": BIG}, delete=["a"]) is False
    assert store.update(sid, {"a": BIG}, idle_ttl=10, expires_in=5) is False
    assert client.exists(key) == 0
    assert store.get(sid) is None
    assert _keys_without_ttl(backend, prefix) == []
    if user:
        assert store.sessions_of(user) == []


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


def test_concurrent_big_writes_to_one_session(client: Any, prefix: str) -> None:
    """Writers of different big fields all keep their change (no lost update), and a destroy
    among them is never undone by a write that follows it."""
    store = _store(client, prefix)
    sid = store.create({}).id
    writers = [
        threading.Thread(target=store.update, args=(sid, {f"f{i}": BIG + str(i)})) for i in range(8)
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    session = store.get(sid)
    assert session is not None
    assert dict(session) == {f"f{i}": BIG + str(i) for i in range(8)}
    store.destroy(sid)
    late = [threading.Thread(target=store.update, args=(sid, {"x": BIG})) for _ in range(4)]
    for thread in late:
        thread.start()
    for thread in late:
        thread.join()
    assert client.exists(_key(store, sid)) == 0


# --- the script cache flushed: the commit meets NOSCRIPT -------------------------------------


def test_big_writes_after_a_script_flush(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix)
    sid = store.create({"a": 1}).id
    store.update(sid, {"a": BIG})
    backend.flush_scripts()
    with backend.counter() as seen:
        assert store.update(sid, {"a": BIG + "1"}, delete=["x"], idle_ttl=30) is True
    # the block, then the block again with the commit as EVAL
    first = ["MULTI", "HSET", "HDEL", "PEXPIRE", "EVALSHA", "EXEC"]
    assert seen.names == [*first, *first[:4], "EVAL", "EXEC"]
    session = store.get(sid)
    assert session is not None
    assert session["a"] == BIG + "1"
    assert session.ttl == 30
    store.destroy(sid)
    backend.flush_scripts()
    assert store.update(sid, {"a": BIG + "2"}) is False
    assert client.exists(_key(store, sid)) == 0
    assert _keys_without_ttl(backend, prefix) == []


def _first_run_only(client: Any, block: Multi) -> list[Any]:
    """``block`` sent once as `multi_steps` sends it first (every script as EVALSHA) and never
    again: what a block whose commit met NOSCRIPT, and whose second send never arrived, left."""
    pipe = client.pipeline(transaction=True)
    for item in block.effects:
        if isinstance(item, Eval):
            pipe.execute_command("EVALSHA", item.script.sha, len(item.keys), *item.keys, *item.args)
        else:
            assert isinstance(item, Command)
            pipe.execute_command(*item.args)
    return list(pipe.execute(raise_on_error=False))


def test_what_a_commit_that_did_not_run_leaves(backend: Backend, prefix: str) -> None:
    """The HSET ran on an ended session and the commit did not: the hash it left has no ``:c``,
    a TTL of `_LEFTOVER_MS` at most, and is no session for any operation (and the writes
    that meet it delete it)."""
    client = backend.client()
    store = _store(client, prefix)
    sid = store.create({"a": 1}).id
    key = _key(store, sid)
    store.destroy(sid)
    plan = store._core.write(sid, {"a": BIG}, ())
    block = next(plan)
    assert isinstance(block, Multi)
    backend.flush_scripts()
    replies = _first_run_only(client, block)
    assert isinstance(replies[-1], redis.exceptions.NoScriptError)
    assert client.hkeys(key) == [b"a"]
    assert 0 < client.pttl(key) <= _LEFTOVER_MS
    assert store.get(sid) is None
    assert store.ttl(sid) is not None  # the key is there (PTTL): until it expires or a write
    assert store.incr(sid, "n") is None
    assert store.rotate(sid) is None
    assert store.rotate(sid, user_id="bob") is None
    assert store.destroy(sid) is False
    assert client.exists(key) == 0  # the take deleted it
    _first_run_only(client, block)
    assert store.update(sid, {"a": 2}) is False  # a small write deletes it too
    assert client.exists(key) == 0
    _first_run_only(client, block)
    assert store.update(sid, {"a": BIG}) is False  # and so does the next block
    assert client.exists(key) == 0


def test_a_live_session_keeps_its_ttl_through_the_nx(client: Any, prefix: str) -> None:
    store = _store(client, prefix, "block", idle_ttl=500)
    sid = store.create({"a": 1}).id
    store.update(sid, {"a": BIG})
    assert client.pttl(_key(store, sid)) > 400_000  # not `_LEFTOVER_MS`


def test_a_live_session_without_a_ttl_gets_its_own_not_the_leftovers(
    client: Any, prefix: str
) -> None:
    """A session PERSISTed (or restored without a TTL): the block's ``PEXPIRE NX`` gives it
    ``_LEFTOVER_MS``, and the commit gives it its own lifetime back, as a read would."""
    store = _store(client, prefix, "block", idle_ttl=500)
    sid = store.create({"a": 1}).id
    key = _key(store, sid)
    client.persist(key)
    assert store.update(sid, {"a": BIG}) is True
    assert client.pttl(key) > 400_000  # its idle lifetime again, not `_LEFTOVER_MS`
    session = store.get(sid)
    assert session is not None
    assert session["a"] == BIG


# TTLs of its own: long, just above the leftover's, just below it (outside the commit's window)
@pytest.mark.parametrize("ttl_ms", [None, 60_000, _LEFTOVER_MS + 3_000, _LEFTOVER_MS - 200])
def test_a_key_of_another_type_is_left_as_it_was(
    backend: Backend, prefix: str, path: str, ttl_ms: int | None
) -> None:
    """Another program's key at a session's name (a shared namespace): a write raises the
    server's ``WRONGTYPE`` and leaves it as it was. The block's ``HSET`` fails on it but its
    ``PEXPIRE NX`` does not: the commit takes back the leftover TTL that gave a key that had
    none, rather than let the key vanish 10 s later; a key with a TTL of its own keeps it."""
    client = backend.client()
    store = _store(client, prefix, path)
    sid = store.create({"a": 1}).id
    key = _key(store, sid)
    client.delete(key)
    client.set(key, b"theirs", px=ttl_ms)
    for write in ({"blob": BIG}, {"a": 2}):
        with pytest.raises(BackendError, match="WRONGTYPE"):
            store.update(sid, write)
        assert client.get(key) == b"theirs"
        if ttl_ms is None:
            assert client.pttl(key) == -1
        else:
            assert 0 < client.pttl(key) <= ttl_ms  # neither PERSISTed nor lengthened
    with pytest.raises(BackendError, match="WRONGTYPE"):
        store.get(sid)  # not a session, and not nothing either


def test_a_user_index_holds_no_leftover(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix, idle_ttl=60)
    sid = store.create({"a": 1}, user_id="carol").id
    key = _key(store, sid)
    client.pexpire(key, 1)  # idled out; its id stays in the index until a prune
    assert _wait(lambda: client.exists(key) == 0)
    plan = store._core.write(sid, {"a": BIG}, (), KEEP, KEEP)
    block = next(plan)
    assert isinstance(block, Multi)
    backend.flush_scripts()
    _first_run_only(client, block)
    assert client.exists(key) == 1
    assert store.sessions_of("carol") == []  # its id left the index
    assert store.destroy_user("carol") == 0


@pytest.mark.backends("valkey", "redis7")  # ACL SETUSER is per node
@pytest.mark.parametrize("operation", ["update", "create"])
@pytest.mark.parametrize("transactions", [False, True])
def test_an_acl_user_without_exec_gets_the_script(
    backend: Backend, prefix: str, transactions: bool, operation: str
) -> None:
    """EXEC is ``@slow @transaction``: a user limited as docs/sessions.md says may not run it.
    The block is then refused whole (nothing ran) and big writes and creates go by the script;
    a user allowed ``@transaction`` gets the block."""
    admin: Any = backend.client()
    user = f"acl-{prefix}"[:60]
    rules = ["+@read", "+@write", "+@scripting", "+@keyspace", "+@fast", "+@connection"]
    if transactions:
        rules.append("+@transaction")
    admin.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", f"~{{{prefix}:*", "-@all", *rules, "-@dangerous"
    )
    try:
        limited = backend.client(username=user, password="pw")
        store = SessionStore(limited, prefix, 60)
        sid = store.create({"a": 1}).id
        store.update(sid, {"a": 2})  # both scripts cached

        def big(value: str) -> str:
            if operation == "update":
                assert store.update(sid, {"a": value}) is True
                return sid
            return store.create({"a": value}).id

        block = BLOCK if operation == "update" else CREATE_BLOCK
        value = BIG if operation == "update" else BIG_CREATE
        with backend.counter() as seen:
            big(value)
        refused = ["MULTI", "EXEC", "EVALSHA"]  # EXEC refused: the queued commands never ran
        assert seen.names == (block if transactions else refused)
        with backend.counter() as seen:
            made = big(value + "!")
        assert seen.names == (block if transactions else ["EVALSHA"])  # remembered
        session = store.get(made)
        assert session is not None
        assert session["a"] == value + "!"
    finally:
        admin.execute_command("ACL", "DELUSER", user)


# --- big creates: the values into a scratch hash the script renames -------------------------


def _scratch_keys(backend: Backend, prefix: str) -> list[bytes]:
    return [key for key in backend.scan(f"*{prefix}*") if b"}:n:" in key]


def _load_scripts(backend: Backend) -> None:
    for server in backend.servers:
        with server.client() as node:
            node.script_load(package_script("session_create").source)


def test_a_big_create_is_one_block(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix)
    _load_scripts(backend)
    with backend.counter() as seen:
        made = store.create({"blob": BIG_CREATE, "n": 1}, user_id="ada")
    assert seen.names == CREATE_BLOCK
    assert dict(made) == {"blob": BIG_CREATE, "n": 1}
    session = store.get(made.id)
    assert session is not None
    assert dict(session) == {"blob": BIG_CREATE, "n": 1}
    assert session.user_id == "ada"
    assert store.sessions_of("ada") == [made.id]
    assert 55_000 < client.pttl(store._core._key_of(made.id)) <= 60_000
    assert _scratch_keys(backend, prefix) == []
    # below the threshold (a big write's 16 KiB is not enough): the one script
    for small in ("small", "m" * (BIG_CREATE_BYTES // 2)):
        with backend.counter() as seen:
            store.create({"blob": small})
        assert seen.names == ["EVALSHA"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"user_id": "bob"},
        {"user_id": 42, "idle_ttl": 30},
        {"expires_in": 20},
        {"user_id": "eve", "idle_ttl": 90, "expires_in": 45},
    ],
)
def test_both_paths_create_the_same_session(
    backend: Backend, prefix: str, path: str, options: dict[str, Any]
) -> None:
    client = backend.client()
    store = _store(client, prefix, path, absolute_ttl=600)
    made = store.create({"blob": BIG_CREATE, "cart": [1, 2]}, **options)
    key = store._core._key_of(made.id)
    stored = client.hgetall(key)
    assert set(stored) == {
        b"blob",
        b"cart",
        b":c",
        b":a",
        *([b":u"] if "user_id" in options else []),
        *([b":i"] if "idle_ttl" in options else []),
        *([b":d"] if "expires_in" in options else []),
    }
    assert stored[b"blob"] == f'"{BIG_CREATE}"'.encode()
    assert stored[b"cart"] == b"[1,2]"
    idle = options.get("idle_ttl", 60)
    ttl = min(idle, options.get("expires_in", idle))
    assert made.ttl == ttl
    assert (ttl - 5) * 1000 < client.pttl(key) <= ttl * 1000
    assert made.absolute_expires_at == pytest.approx(
        made.created_at + min(600, options.get("expires_in", 600)), abs=0.01
    )
    if "user_id" in options:
        assert made.user_id == str(options["user_id"])
        assert store.sessions_of(str(options["user_id"])) == [made.id]
    session = store.get(made.id)
    assert session is not None
    assert dict(session) == {"blob": BIG_CREATE, "cart": [1, 2]}
    assert _scratch_keys(backend, prefix) == []


def test_a_request_commit_of_a_new_big_session_is_one_block(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = _store(client, prefix)
    _load_scripts(backend)
    with backend.counter() as seen:
        outcome = store.commit(
            SessionChanges(loaded=None, data={"cart": [BIG_CREATE]}, had_cookie=True)
        )
    assert seen.names == CREATE_BLOCK
    assert outcome.sid is not None
    session = store.get(outcome.sid)
    assert session is not None
    assert session["cart"] == [BIG_CREATE]


async def test_async_big_create(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    store = AsyncSessionStore(client, prefix, 60)
    _load_scripts(backend)
    await store.create({"warm": "the client"})  # a cluster client's first call maps the slots
    with backend.counter() as seen:
        made = await store.create({"blob": BIG_CREATE}, user_id="ada")
    assert seen.names == CREATE_BLOCK
    session = await store.get(made.id)
    assert session is not None
    assert session["blob"] == BIG_CREATE
    assert await store.sessions_of("ada") == [made.id]
    await client.aclose()


def test_big_creates_after_a_script_flush(backend: Backend, prefix: str) -> None:
    """The script met NOSCRIPT inside EXEC (the HSET and PEXPIRE ran): the block is sent again
    with EVAL, which renames the scratch hash; nothing is left behind."""
    client = backend.client()
    store = _store(client, prefix)
    store.create({"blob": BIG_CREATE})
    backend.flush_scripts()
    made = store.create({"blob": BIG_CREATE + "1"}, user_id="ada")
    session = store.get(made.id)
    assert session is not None
    assert session["blob"] == BIG_CREATE + "1"
    assert store.sessions_of("ada") == [made.id]
    assert _scratch_keys(backend, prefix) == []
    assert [k for k in backend.scan(f"*{prefix}*") if client.pttl(k) == -1] == [
        store._core.index_key("ada")
    ]  # only the index of a session without absolute expiry has no TTL


def test_what_a_block_whose_script_did_not_run_leaves(backend: Backend, prefix: str) -> None:
    """The block as the library sends it, run once by hand on a server with no scripts cached,
    and never sent again: no session (nothing reads the scratch hash as one), and the scratch
    hash expires within ``_LEFTOVER_MS``."""
    client = backend.client()
    store = _store(client, prefix)
    block = next(store._core.create({"blob": BIG_CREATE}, "ada"))  # the plan's first effect
    assert isinstance(block, Multi)
    backend.flush_scripts()
    replies = _first_run_only(client, block)
    assert isinstance(replies[-1], NoScriptError)
    (scratch,) = _scratch_keys(backend, prefix)
    assert 0 < client.pttl(scratch) <= _LEFTOVER_MS
    assert store.sessions_of("ada") == []
    sessions = [k for k in backend.scan(f"*{prefix}*") if b"}:s:" in k]
    assert sessions == []


def test_the_script_refuses_a_taken_id_and_a_missing_scratch(client: Any, prefix: str) -> None:
    """``session_create`` with a scratch hash, called directly: an id already taken leaves that
    session alone and deletes the scratch hash; a scratch hash that is not there (the block's
    HSET failed) is an error, never a session without its fields."""
    store = _store(client, prefix)
    taken = store.create({"mine": 1}).id
    key, scratch = store._core._key_of(taken), store._core._scratch_of(taken)
    script = package_script("session_create")
    args = (60_000, 0, 0, 0, "", taken, 0, 0, 0)
    client.hset(scratch, "theirs", "2")
    assert client.evalsha(client.script_load(script.source), 2, key, scratch, *args) is None
    assert client.exists(scratch) == 0
    assert client.hget(key, "mine") == b"1"
    assert client.hexists(key, "theirs") == 0
    fresh = "abc." + "A" * 43
    key, scratch = store._core._key_of(fresh), store._core._scratch_of(fresh)
    with pytest.raises(ResponseError, match="scratch hash of a big session create is missing"):
        client.evalsha(script.sha, 2, key, scratch, *args[:5], fresh, 0, 0, 0)
    assert client.exists(key) == 0


# --- destroys: the values stay out of Lua at any size ----------------------------------------


def test_a_destroy_reads_no_field(backend: Backend, prefix: str) -> None:
    """``session_take`` for a destroy deletes the session without HGETALL: a big session's
    values are neither read into Lua nor sent back (the reply is the clock and the TTL)."""
    client = backend.client()
    store = _store(client, prefix)
    for user in (None, "ada"):
        sid = store.create({"blob": BIG_CREATE, "n": 1}, user_id=user).id
        with backend.counter() as seen:
            assert store.destroy(sid) is True
        inside = [c.name for c in seen.inside_scripts]
        assert "HGETALL" not in inside
        assert inside[-2 if user else -1] == "DEL"
        assert store.get(sid) is None
        assert store.destroy(sid) is False
    assert store.sessions_of("ada") == []
    assert [k for k in backend.scan(f"*{prefix}*") if b"}:s:" in k] == []
    # the reply itself: no fields come back from a destroy's take
    sid = store.create({"blob": BIG_CREATE}).id
    node = backend.client()
    take = package_script("session_take")
    reply = node.eval(take.source, 1, store._core._key_of(sid), "", sid, 0)
    assert reply[2] == []
    assert int(reply[1]) > 0
    assert node.exists(store._core._key_of(sid)) == 0
