"""SessionStore on real servers (standalone, cluster): semantics, expiry, rotation, concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from redis_patterns import (
    BackendError,
    ConfigurationError,
    ScriptError,
    SessionChanges,
    SessionOutcome,
    SessionStore,
)
from redis_patterns._script import package_script
from redis_patterns.testing.pytest_plugin import Backend


def server_ms(client: Any, key: bytes) -> int:
    """The server clock (ms) of the node holding ``key``."""
    if hasattr(client, "get_node_from_key"):
        node = client.get_node_from_key(key)
        seconds, micros = client.execute_command("TIME", target_nodes=node)
    else:
        seconds, micros = client.execute_command("TIME")
    return int(seconds) * 1000 + int(micros) // 1000


def key_of(store: SessionStore, sid: str) -> bytes:
    return store._core._key_of(sid)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def run_threads(count: int, target: Callable[[int], object]) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_create_get_roundtrip(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=60, absolute_ttl=600)
    made = store.create({"email": "a@example.com", "cart": [1, 2], "n": 3}, user_id=42)
    assert made.user_id == "42"
    assert dict(made) == {"email": "a@example.com", "cart": [1, 2], "n": 3}
    assert made.absolute_expires_at == pytest.approx(made.created_at + 600)
    assert made.idle_expires_at == pytest.approx(made.created_at + 60)
    got = store.get(made.id)
    assert got is not None
    assert got.id == made.id
    assert dict(got) == dict(made)
    assert got.user_id == "42"
    assert got.created_at == made.created_at
    assert got.absolute_expires_at == made.absolute_expires_at
    # one hash, values JSON per field, metadata under ':'
    raw = client.hgetall(key_of(store, made.id))
    assert raw[b"email"] == b'"a@example.com"'
    assert raw[b"n"] == b"3"
    assert raw[b":u"] == b"42"
    assert client.type(key_of(store, made.id)) == b"hash"


def test_get_is_one_command_and_slides_but_never_past_absolute(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=5, absolute_ttl=30)
    made = store.create({"a": 1})
    key = key_of(store, made.id)
    store.get(made.id)  # warm the script cache
    client.pexpire(key, 1000)
    with backend.counter() as seen:
        got = store.get(made.id)
    assert seen.names == ["EVALSHA"]
    assert got is not None
    assert got.ttl == 5.0
    assert 1000 < client.pttl(key) <= 5000
    # an absolute deadline 800 ms away caps the refresh
    client.hset(key, ":a", server_ms(client, key) + 800)
    with backend.counter() as seen:
        got = store.get(made.id)
    assert seen.names == ["EVALSHA"]
    assert got is not None
    assert got.ttl <= 0.8
    assert got.idle_expires_at <= got.absolute_expires_at  # type: ignore[operator]
    assert 0 < client.pttl(key) <= 800


def test_idle_expiry(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=0.3)
    made = store.create({"a": 1})
    assert store.get(made.id) is not None
    # poll with ttl(), which does not slide (get() would keep it alive)
    assert wait_until(lambda: store.ttl(made.id) is None, timeout=10, step=0.05)
    assert store.get(made.id) is None
    assert client.exists(key_of(store, made.id)) == 0


def test_activity_slides_idle_expiry(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=2.0)
    made = store.create({"a": 1})
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # longer than the idle lifetime, kept alive by reads
        got = store.get(made.id)
        assert got is not None
        assert got.ttl == 2.0
        time.sleep(0.1)


@pytest.mark.fault
def test_absolute_expiry_despite_activity(client: Any, prefix: str, scale: Any) -> None:
    """RELIABILITY 23: idle 2 s, absolute 5 s, touched every 0.5 s (small: 0.8 / 1.6 / 0.2)."""
    # small: idle 0.8 s, absolute 1.6 s, a read every 0.2 s (a stall of 0.6 s would idle it out)
    idle, absolute = (0.8, 1.6) if scale(0, 1) == 0 else (2.0, 5.0)
    step = idle / 4
    store = SessionStore(client, namespace=prefix, idle_ttl=idle, absolute_ttl=absolute)
    made = store.create({"a": 1})
    key = key_of(store, made.id)
    absolute_ms = round(made.absolute_expires_at * 1000)  # type: ignore[operator]
    reads = 0
    deadline = time.monotonic() + absolute + 10
    while time.monotonic() < deadline:
        got = store.get(made.id)
        if got is None:
            break
        reads += 1
        # the key's TTL never exceeds min(idle, absolute remaining), on the server's clock
        now = server_ms(client, key)
        pttl = client.pttl(key)
        if pttl > 0:
            assert pttl <= min(idle * 1000, absolute_ms - now + 1)
        time.sleep(step)
    else:
        pytest.fail("the session outlived its absolute lifetime")
    assert reads >= 3
    assert server_ms(client, key) >= absolute_ms
    assert client.exists(key) == 0


def test_update_delete_incr(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix)
    made = store.create({"a": 1, "b": 2})
    assert store.update(made.id, {"c": {"x": [1]}}, delete=["a"]) is True
    assert store.delete_fields(made.id, "b") is True
    assert store.incr(made.id, "n") == 1
    assert store.incr(made.id, "n", -5) == -4
    got = store.get(made.id)
    assert got is not None
    assert dict(got) == {"c": {"x": [1]}, "n": -4}
    client.hset(key_of(store, made.id), "s", b'"text"')
    with pytest.raises(ScriptError, match="not an integer"):
        store.incr(made.id, "s")


def test_writes_never_resurrect(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix)
    made = store.create({"a": 1})
    assert store.destroy(made.id) is True
    assert store.destroy(made.id) is False
    assert store.update(made.id, {"a": 2}) is False
    assert store.incr(made.id, "n") is None
    assert store.delete_fields(made.id, "a") is False
    assert store.rotate(made.id) is None
    assert store.ttl(made.id) is None
    assert client.exists(key_of(store, made.id)) == 0


def test_ttl_does_not_slide(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=10)
    made = store.create()
    client.pexpire(key_of(store, made.id), 4000)
    ttl = store.ttl(made.id)
    assert ttl is not None
    assert 0 < ttl <= 4.0


def test_rotate_keeps_data_and_absolute_expiry(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=30, absolute_ttl=60)
    made = store.create({"cart": [1]})
    new = store.rotate(made.id)
    assert new is not None
    assert new != made.id
    assert new[:3] == made.id[:3]  # anonymous: same bucket, one atomic script
    assert store.get(made.id) is None
    assert client.exists(key_of(store, made.id)) == 0
    got = store.get(new)
    assert got is not None
    assert dict(got) == {"cart": [1]}
    assert got.created_at == made.created_at
    assert got.absolute_expires_at == made.absolute_expires_at


def test_login_rotation_binds_user_and_index(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, idle_ttl=30, absolute_ttl=60)
    anonymous = store.create({"cart": [1]})
    logged_in = store.rotate(anonymous.id, user_id="alice")
    assert logged_in is not None
    assert store.get(anonymous.id) is None
    got = store.get(logged_in)
    assert got is not None
    assert got.user_id == "alice"
    assert dict(got) == {"cart": [1]}
    assert got.absolute_expires_at == anonymous.absolute_expires_at
    assert store.sessions_of("alice") == [logged_in]
    # privilege change: same user, new id, index follows in the same script
    elevated = store.rotate(logged_in)
    assert elevated is not None
    assert store.sessions_of("alice") == [elevated]
    # user switch: the session leaves alice's index and joins bob's
    switched = store.rotate(elevated, user_id="bob")
    assert switched is not None
    assert store.sessions_of("alice") == []
    assert store.sessions_of("bob") == [switched]
    # log out but keep an anonymous session
    anonymous_again = store.rotate(switched, user_id=None)
    assert anonymous_again is not None
    assert store.sessions_of("bob") == []
    final = store.get(anonymous_again)
    assert final is not None
    assert final.user_id is None


@pytest.mark.fault
@pytest.mark.parametrize("user", [None, "carol"])
def test_concurrent_rotate_has_exactly_one_winner(
    backend: Backend, prefix: str, user: str | None, scale: Any
) -> None:
    store = SessionStore(backend.client(), namespace=prefix)
    threads = scale(8, 32)
    for _ in range(scale(3, 20)):
        made = store.create({"a": 1}, user_id="dave")
        results: list[str | None] = [None] * threads

        def rotate(i: int, sid: str = made.id, out: list[str | None] = results) -> None:
            out[i] = store.rotate(sid, user_id=user)

        run_threads(threads, rotate)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert store.get(made.id) is None
        assert store.get(winners[0]) is not None


@pytest.mark.fault
def test_old_id_fails_after_each_rotation(backend: Backend, prefix: str, scale: Any) -> None:
    """RELIABILITY 22: login, role change, password change, logout with concurrent requests."""
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60)
    readers = scale(10, 100)
    sid = store.create({"cart": 1}).id
    stop = threading.Event()
    late_hits: list[str] = []
    rotated_at: dict[str, float] = {}

    def reader(_: int) -> None:
        reader_store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60)
        while not stop.is_set():
            for old, when in list(rotated_at.items()):
                started = time.monotonic()
                if started > when and reader_store.get(old) is not None:
                    late_hits.append(old)
            time.sleep(0.005)

    def changes(i: int) -> None:
        nonlocal sid
        if i != 0:
            reader(i)
            return
        try:
            for user in ("erin", "erin", "erin"):  # login, role change, password change
                old = sid
                new = store.rotate(old, user_id=user)
                assert new is not None
                rotated_at[old] = time.monotonic()
                sid = new
                time.sleep(0.05)
            assert store.destroy(sid) is True  # logout
            rotated_at[sid] = time.monotonic()
            assert backend.client().exists(key_of(store, sid)) == 0
            time.sleep(0.05)
        finally:
            stop.set()

    run_threads(readers + 1, changes)
    assert late_hits == []
    assert len(rotated_at) == 4


def test_fifty_concurrent_incr_are_exact(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(max_connections=64), namespace=prefix)
    made = store.create({"cart_count": 0})
    run_threads(50, lambda _: store.incr(made.id, "cart_count"))
    got = store.get(made.id)
    assert got is not None
    assert got["cart_count"] == 50


def test_concurrent_updates_of_different_fields_lose_none(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(max_connections=64), namespace=prefix)
    made = store.create({"base": True})
    run_threads(20, lambda i: store.update(made.id, {f"f{i}": i}))
    got = store.get(made.id)
    assert got is not None
    assert dict(got) == {"base": True, **{f"f{i}": i for i in range(20)}}


def test_destroy_user_removes_every_session(backend: Backend, prefix: str) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix, absolute_ttl=3600)
    ids = [store.create({"i": i}, user_id="frank").id for i in range(5)]
    other = store.create({}, user_id="grace")
    store.destroy(ids[0])
    assert sorted(store.sessions_of("frank")) == sorted(ids[1:])
    assert store.destroy_user("frank") == 4
    assert all(client.exists(key_of(store, i)) == 0 for i in ids)
    assert client.exists(store._core.index_key("frank")) == 0
    assert store.sessions_of("frank") == []
    assert store.get(other.id) is not None
    assert store.destroy_user("nobody") == 0


def test_index_drops_expired_ids_and_expires_itself(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=0.2, absolute_ttl=0.5)
    for _ in range(3):
        store.create({}, user_id="heidi")
    index = store._core.index_key("heidi")
    assert client.zcard(index) == 3
    assert 0 < client.pttl(index) <= 500
    assert wait_until(lambda: store.sessions_of("heidi") == [], timeout=10, step=0.1)
    assert wait_until(lambda: client.exists(index) == 0, timeout=10, step=0.1)


def test_index_is_pruned_without_absolute_ttl(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, idle_ttl=60)
    index = store._core.index_key("ivan")
    dead = [store.create({}, user_id="ivan").id for _ in range(31)]
    for sid in dead:
        client.delete(key_of(store, sid))  # as if they had idled out
    live = store.create({}, user_id="ivan")  # the 32nd entry triggers a prune
    assert client.zrange(index, 0, -1) == [live.id.encode()]
    assert client.pttl(index) == -1  # sessions may slide forever, so the index may too


@pytest.mark.fault
def test_destroy_user_with_concurrent_creates(backend: Backend, prefix: str, scale: Any) -> None:
    store = SessionStore(backend.client(max_connections=64), namespace=prefix)
    creators, per_creator = 8, scale(5, 50)
    created: list[tuple[str, float]] = []
    destroyed: list[tuple[float, int]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        if i == creators:  # the destroyer
            for _ in range(3):
                started = time.monotonic()
                count = store.destroy_user("judy")
                with lock:
                    destroyed.append((started, count))
                time.sleep(0.01)
            return
        for _ in range(per_creator):
            sid = store.create({"by": i}, user_id="judy").id
            with lock:
                created.append((sid, time.monotonic()))

    run_threads(creators + 1, work)
    total = creators * per_creator
    assert len(created) == total
    alive = {sid for sid, _ in created if store.get(sid) is not None}
    # every session is either destroyed (counted exactly once) or still indexed
    assert sum(count for _, count in destroyed) + len(alive) == total
    assert set(store.sessions_of("judy")) == alive
    # a session created before a destroy_user started is gone
    first_destroy = min(started for started, _ in destroyed)
    assert not {sid for sid, done in created if done < first_destroy} & alive
    assert store.destroy_user("judy") == len(alive)
    assert all(store.get(sid) is None for sid, _ in created)


def test_field_that_is_not_json_is_an_error_never_unpickled(
    client: Any, prefix: str, tmp_path: Any
) -> None:
    import os
    import pickle

    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {canary}",))

    store = SessionStore(client, namespace=prefix)
    made = store.create({"a": 1})
    client.hset(key_of(store, made.id), "evil", pickle.dumps(Evil()))
    with pytest.raises(BackendError, match="evil"):
        store.get(made.id)
    assert not canary.exists()


def test_default_path_never_uses_pickle(
    client: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used")

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    store = SessionStore(client, namespace=prefix)
    made = store.create({"a": [1, {"b": None}]}, user_id="ken")
    store.update(made.id, {"c": 1.5})
    store.incr(made.id, "n")
    new = store.rotate(made.id, user_id="lee")
    assert new is not None
    got = store.get(new)
    assert got is not None
    assert dict(got) == {"a": [1, {"b": None}], "c": 1.5, "n": 1}
    store.destroy_user("lee")


BAD_CONFIG: list[dict[str, Any]] = [
    {"idle_ttl": 0},
    {"idle_ttl": -1},
    {"idle_ttl": float("nan")},
    {"idle_ttl": float("inf")},
    {"idle_ttl": True},
    {"idle_ttl": "10"},
    {"idle_ttl": 0.0001},
    {"idle_ttl": 10, "absolute_ttl": 5},
    {"absolute_ttl": 0},
    {"namespace": ""},
    {"namespace": "a{b}"},
    {"namespace": b"bytes"},
    {"serializer": "yaml"},
]


@pytest.mark.parametrize("kwargs", BAD_CONFIG)
def test_bad_configuration_is_refused(client: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SessionStore(client, **kwargs)


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("create", ({"x": object()},), {}),
    ("create", ({1: "a"},), {}),
    ("create", ({":u": "admin"},), {}),
    ("create", ({"": 1},), {}),
    ("create", ({"a" * 2000: 1},), {}),
    ("create", (["not", "a", "mapping"],), {}),
    ("create", ({},), {"user_id": ""}),
    ("create", ({},), {"user_id": True}),
    ("create", ({},), {"user_id": b"bytes"}),
    ("create", ({},), {"user_id": "a\x00b"}),
    ("create", ({},), {"user_id": "u" * 2000}),
    ("update", ("SID", {"x": {1, 2}}), {}),
    ("update", ("SID", {":a": 1}), {}),
    ("update", ("SID", {}), {"delete": "abc"}),
    ("incr", ("SID", "n", 1.5), {}),
    ("incr", ("SID", "n", True), {}),
    ("incr", ("SID", "n", 2**64), {}),
    ("incr", ("SID", ":c", 1), {}),
    ("delete_fields", ("SID", ":u"), {}),
    ("rotate", ("SID",), {"user_id": ""}),
    ("destroy_user", ("",), {}),
    ("destroy_user", (None,), {}),
    ("sessions_of", (3.5,), {}),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), BAD_CALLS)
def test_bad_input_fails_before_any_io(
    backend: Backend, prefix: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    client = backend.client()
    store = SessionStore(client, namespace=prefix)
    sid = store.create().id
    args = tuple(sid if a == "SID" else a for a in args)
    with backend.counter() as seen, pytest.raises(ConfigurationError):
        getattr(store, method)(*args, **kwargs)
    assert seen.count == 0


def test_incr_needs_json(client: Any, prefix: str) -> None:
    store = SessionStore(client, namespace=prefix, serializer="msgpack")
    made = store.create({"a": b"\x00bin"})
    got = store.get(made.id)
    assert got is not None
    assert got["a"] == b"\x00bin"
    with pytest.raises(ConfigurationError, match="json"):
        store.incr(made.id, "n")


@pytest.mark.backends("valkey", "redis7")
def test_works_as_acl_user_limited_to_its_namespace(backend: Backend, prefix: str) -> None:
    """RELIABILITY 24: the store needs nothing beyond its own keys (``~{namespace:*``)."""
    admin: Any = backend.client()
    user = f"acl-{prefix}"[:60]
    admin.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", f"~{{{prefix}:*", "-@all",
        "+@read", "+@write", "+@scripting", "+@keyspace", "+@fast", "+@connection",
        "-@dangerous",
    )  # fmt: skip
    try:
        limited = backend.client(username=user, password="pw")
        store = SessionStore(limited, namespace=prefix, idle_ttl=60, absolute_ttl=600)
        made = store.create({"a": 1}, user_id="zed")
        assert store.get(made.id) is not None
        assert store.update(made.id, {"b": 2}) is True
        assert store.incr(made.id, "n") == 1
        new = store.rotate(made.id, user_id="yan")
        assert new is not None
        assert store.sessions_of("yan") == [new]
        assert store.destroy_user("yan") == 1
        other = SessionStore(limited, namespace=prefix + "-other")
        with pytest.raises(BackendError, match=r"NOPERM|permission"):
            other.create({"a": 1})
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_round_trips_per_operation(backend: Backend, prefix: str) -> None:
    store = SessionStore(backend.client(), namespace=prefix, idle_ttl=60, absolute_ttl=600)
    # load every script on every node, so each call takes the EVALSHA path only
    from redis_patterns._script import package_script

    for server in backend.servers:
        with server.client() as node:
            for verb in ("create", "get", "write", "incr", "take", "rotate", "user"):
                node.script_load(package_script(f"session_{verb}").source)
    made = store.create({"a": 1}, user_id="ops")
    expected: list[tuple[Callable[[], object], list[str]]] = [
        (lambda: store.create({"a": 1}), ["EVALSHA"]),
        (lambda: store.get(made.id), ["EVALSHA"]),
        (lambda: store.update(made.id, {"b": 2}, delete=["a"]), ["EVALSHA"]),
        (lambda: store.incr(made.id, "n"), ["EVALSHA"]),
        (lambda: store.ttl(made.id), ["PTTL"]),
    ]
    for call, names in expected:
        with backend.counter() as seen:
            call()
        assert seen.names == names
    with backend.counter() as seen:
        same_user = store.rotate(made.id)
    assert seen.names == ["HMGET", "EVALSHA"]
    with backend.counter() as seen:
        other_user = store.rotate(same_user or "", user_id="someone-else")
    assert sorted(seen.names) == ["EVALSHA", "EVALSHA", "HMGET"]  # two slots on a cluster
    # a rotation to another user moves the fields, so its take reads them (HGETALL)
    assert "HGETALL" in [c.name for c in seen.inside_scripts]
    with backend.counter() as seen:
        assert store.destroy(other_user or "") is True
    assert seen.names == ["EVALSHA", "EVALSHA"]  # the second declares the user's index
    # a destroy reads no field (its values never pass through Lua): the owner, then deletes
    inside = [c.name for c in seen.inside_scripts]
    assert inside == ["HMGET", "HMGET", "TIME", "PTTL", "DEL", "ZREM"]


def test_decode_responses_client_is_refused(backend: Backend, prefix: str) -> None:
    """Issue 13 (8a): such a client answered every read with str, and get() raised a bare
    TypeError once sessions existed; it is refused up front, as Cache refuses it."""
    with pytest.raises(ConfigurationError, match="decode_responses=True"):
        SessionStore(backend.client(decode_responses=True), namespace=prefix)


def test_commit_is_the_request_end_in_as_few_commands_as_the_changes_need(
    backend: Backend, prefix: str
) -> None:
    client: Any = backend.client()
    store = SessionStore(client, namespace=prefix)
    for name in ("session_create", "session_write"):  # cached on every node: one EVALSHA each
        client.script_load(package_script(name).source)
    with backend.counter() as seen:
        outcome = store.commit(SessionChanges(loaded=None, data={"cart": [1]}, had_cookie=True))
    assert seen.names == ["EVALSHA"]  # one create script
    assert outcome.touch_cookie
    assert outcome.max_age == 1800
    session = store.get(outcome.sid or "")
    assert session is not None
    assert dict(session) == {"cart": [1]}
    with backend.counter() as seen:
        unchanged = store.commit(SessionChanges(loaded=session, data=dict(session)))
    assert seen.names == []
    assert unchanged == SessionOutcome(session.id, 1800, touch_cookie=True, refresh_only=True)
    with backend.counter() as seen:
        written = store.commit(
            SessionChanges(session, {"cart": [1, 2]}, changed={"cart": [1, 2]}, deleted=())
        )
    assert seen.names == ["EVALSHA"]  # one update script
    assert written == SessionOutcome(session.id, 1800, touch_cookie=True)
    store.destroy(session.id)
    with backend.counter() as seen:
        gone = store.commit(SessionChanges(session, {"cart": [3]}, changed={"cart": [3]}))
    assert seen.names == ["EVALSHA"]
    assert gone == SessionOutcome(None, 0, touch_cookie=False)  # ended: written nowhere
    assert store.get(session.id) is None
    with backend.counter() as seen:
        empty = store.commit(SessionChanges(loaded=None, data={}, had_cookie=True))
    assert seen.names == []
    assert empty == SessionOutcome(None, 0, touch_cookie=True)  # the stale cookie is deleted
