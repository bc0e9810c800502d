"""SessionCore's plans without a server: effects yielded, replies decoded, key layout."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_patterns._core.sessions import KEEP, SessionCore, new_session_id
from redis_patterns._plan import Command, Eval, run_canned


def core(**kwargs: object) -> SessionCore:
    options: dict[str, object] = {
        "namespace": "sess",
        "idle_ttl": 1800,
        "absolute_ttl": None,
        "serializer": "json",
    }
    options.update(kwargs)
    return SessionCore(**options)  # type: ignore[arg-type]


def test_get_is_one_eval_and_decodes_metadata_apart() -> None:
    c = core(absolute_ttl=3600)
    sid = new_session_id(None)
    flat = [b":c", b"1000", b":a", b"3601000", b":u", b"42", b"cart", b"[1,2]"]
    session, effects = run_canned(c.get(sid), [[*flat, 2000, 1800000]])
    assert len(effects) == 1
    assert isinstance(effects[0], Eval)
    assert effects[0].script.name == "session_get"
    assert effects[0].keys == (f"{{sess:{sid[:3]}}}:s:{sid[4:]}".encode(),)
    assert effects[0].args == (1_800_000, 64 * 1024)
    assert session is not None
    assert dict(session) == {"cart": [1, 2]}
    assert session.user_id == "42"
    assert session.created_at == 1.0
    assert session.absolute_expires_at == 3601.0
    assert session.idle_expires_at == 1802.0
    assert session.ttl == 1800.0
    assert sid not in repr(session)  # the id is a credential


def test_a_large_session_is_read_by_hgetall_after_the_script_slid_it() -> None:
    c = core()
    sid = new_session_id(None)
    stored = {b":c": b"1000", b"big": b'"' + b"x" * 10 + b'"'}
    session, effects = run_canned(c.get(sid), [[2000, 1800000], stored])
    read, fetch = effects
    assert isinstance(read, Eval)
    assert isinstance(fetch, Command)
    assert fetch.args == ("HGETALL", read.keys[0])
    assert session is not None
    assert dict(session) == {"big": "x" * 10}
    assert session.created_at == 1.0
    assert session.idle_expires_at == 1802.0


def test_a_large_session_gone_before_its_hgetall_is_none() -> None:
    value, effects = run_canned(core().get(new_session_id(None)), [[2000, 1800000], {}])
    assert value is None
    assert len(effects) == 2


def test_unknown_session_is_none() -> None:
    value, effects = run_canned(core().get(new_session_id(None)), [None])
    assert value is None
    assert len(effects) == 1


def test_malformed_id_yields_no_effect() -> None:
    value, effects = run_canned(core().get("nope"), [])
    assert value is None
    assert effects == []


def test_user_sessions_share_the_index_hash_tag() -> None:
    c = core()
    _, effects = run_canned(c.create({"a": 1}, "alice"), [[b"1000", b"1800000", -1, 1, -1]])
    (effect,) = effects
    assert isinstance(effect, Eval)
    session_key, index_key = (bytes(k) for k in effect.keys)  # type: ignore[arg-type]
    tag = session_key[: session_key.index(b"}") + 1]
    assert index_key == tag + b":u:alice"
    assert index_key == c.index_key("alice")


def test_rotation_to_another_user_takes_then_puts() -> None:
    c = core()
    sid = new_session_id(None)
    flat = [b":c", b"1000", b"cart", b"1"]
    new, effects = run_canned(
        c.rotate(sid, "bob"),
        [[b"1000", None], [b"2000", 5000, flat], [b"2000", b"1800000", -1, 1, -1]],
    )
    assert isinstance(effects[0], Command)
    assert [e.script.name for e in effects[1:] if isinstance(e, Eval)] == [
        "session_take",
        "session_create",
    ]
    assert new is not None
    assert new[:3] == c.index_key("bob")[6:9].decode()


def test_absolute_must_cover_idle() -> None:
    from redis_patterns import ConfigurationError

    with pytest.raises(ConfigurationError, match="absolute_ttl"):
        core(idle_ttl=10, absolute_ttl=5)


def test_core_imports_no_io() -> None:
    import ast
    from pathlib import Path

    import redis_patterns._core.sessions as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] in {"redis", "asyncio", "socket"}}
    assert ".._runner" not in imported
    assert "_runner" not in imported


_WELL_FORMED = re.compile(r"[0-9a-f]{3}\.[A-Za-z0-9_-]{43}")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.floats()))
def test_any_malformed_id_yields_no_effect(sid: object) -> None:
    c = core()
    for plan in (c.get(sid), c.ttl(sid), c.destroy(sid), c.rotate(sid, KEEP), c.incr(sid, "n", 1)):
        value, effects = run_canned(plan, [])
        assert effects == []
        assert value in (None, False)


@given(st.from_regex(_WELL_FORMED, fullmatch=True))
def test_every_well_formed_id_is_accepted(sid: str) -> None:
    _, effects = run_canned(core().get(sid), [None])
    assert len(effects) == 1


def test_three_occupied_fresh_ids_is_a_backend_error() -> None:
    from redis_patterns import BackendError

    with pytest.raises(BackendError, match="another writer"):
        run_canned(core().create({"a": 1}, None), [None, None, None])


def test_a_big_write_is_one_block_with_session_write_as_its_commit() -> None:
    from redis_patterns._core.sessions import _LEFTOVER_MS
    from redis_patterns._plan import Features, Multi

    features = Features()
    c = core(features=features)
    sid = new_session_id(None)
    big = "x" * c.big_write_bytes
    wrote, effects = run_canned(c.write(sid, {"a": big}, ["b"], 30, KEEP), [[1, 0, 0, 1]])
    assert wrote is True
    (block,) = effects
    assert isinstance(block, Multi)
    key = c._key_of(sid)
    hset, hdel, pexpire, commit = block.effects
    assert isinstance(hset, Command)
    assert isinstance(hdel, Command)
    assert hset.args == ("HSET", key, "a", f'"{big}"'.encode())
    assert hdel.args == ("HDEL", key, "b")
    assert isinstance(pexpire, Command)
    assert pexpire.args == ("PEXPIRE", key, _LEFTOVER_MS, "NX")
    assert isinstance(commit, Eval)
    assert commit.script.name == "session_write"
    assert commit.keys == (key,)
    # no fields: the check, the expiry, and the TTL its NX gives a key that had none
    assert commit.args == (-1, 30_000, -1, 1_800_000, _LEFTOVER_MS)
    assert features.nx_block is True
    gone, _ = run_canned(c.write(sid, {"a": big}, []), [[1, 1, 0]])
    assert gone is False  # the commit found no ':c': the session had ended


def test_a_big_create_is_one_block_renaming_a_scratch_hash() -> None:
    from redis_patterns._core.sessions import _LEFTOVER_MS
    from redis_patterns._plan import Multi, Replicated

    c = core()
    big = "x" * c.big_create_bytes
    reply = [b"1000", b"1800000", -1, 1, -1]
    session, effects = run_canned(c.create({"a": big}, "ada"), [[1, 1, reply]])
    (block,) = effects
    assert isinstance(block, Multi)
    hset, pexpire, commit = block.effects
    sid = session.id
    scratch = c._scratch_of(sid)
    assert scratch == f"{{sess:{sid[:3]}}}:n:{sid[4:]}".encode()  # the session's slot
    assert hset == Command(("HSET", scratch, "a", f'"{big}"'.encode()))
    assert pexpire == Command(("PEXPIRE", scratch, _LEFTOVER_MS))
    assert isinstance(commit, Eval)
    assert commit.script.name == "session_create"
    assert commit.keys == (c._key_of(sid), c.index_key("ada"), scratch)
    assert commit.args == (1_800_000, 0, 0, 0, "ada", sid, 0, 0, 0)  # no fields
    assert dict(session) == {"a": big}
    # below the threshold, or waiting for replicas (the script's WAIT follows it): the script
    _, effects = run_canned(c.create({"a": "small"}, None), [reply])
    assert [type(e) for e in effects] == [Eval]
    waiting = core(wait_replicas=1)
    _, effects = run_canned(waiting.create({"a": big}, None), [(reply, 1)])
    assert [type(e) for e in effects] == [Replicated]


def test_a_small_write_stays_one_script() -> None:
    c = core()
    sid = new_session_id(None)
    small = "x" * (c.big_write_bytes - 3)  # with its quotes, one byte short
    wrote, effects = run_canned(c.write(sid, {"a": small}, []), [1])
    assert wrote is True
    (script,) = effects
    assert isinstance(script, Eval)
    assert script.script.name == "session_write"


def test_a_server_without_expire_nx_gets_the_script() -> None:
    """Before Redis 7.0 PEXPIRE takes no NX: the block is refused while queued (EXECABORT:
    nothing ran), the write goes by the script, and so does every big write after it."""
    from redis_patterns import ScriptError
    from redis_patterns._errors import BackendError
    from redis_patterns._plan import Features, Multi

    features = Features()
    c = core(features=features)
    sid = new_session_id(None)
    big = "x" * c.big_write_bytes
    aborted = BackendError("EXECABORT Transaction discarded because of previous errors.")
    refused = BackendError("wrong number of arguments for 'pexpire' command")
    wrote, effects = run_canned(c.write(sid, {"a": big}, []), [[aborted, refused, aborted], 1])
    assert wrote is True
    block, script = effects
    assert isinstance(block, Multi)
    assert isinstance(script, Eval)
    assert script.script.name == "session_write"
    assert script.args[:5] == (1, -1, -1, 1_800_000, "a")
    assert features.nx_block is False
    _, effects = run_canned(c.write(sid, {"a": big}, []), [1])
    assert [type(e) for e in effects] == [Eval]
    # an error of a block that ran is raised, never taken for a missing NX
    c = core()
    wrongtype = ScriptError("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(ScriptError, match="WRONGTYPE"):
        run_canned(c.write(sid, {"a": big}, []), [[wrongtype, 1, wrongtype]])
