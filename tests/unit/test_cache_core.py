"""Cache plans driven with canned replies: no server, no event loop."""

from __future__ import annotations

import inspect
import math
import random

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import Cache, ConfigurationError, LockTimeoutError, ScriptError
from redis_patterns._core.cache import CacheCore
from redis_patterns._flight import SingleFlight
from redis_patterns._plan import Call, Command, Eval, Multi, Now, Pipeline, Sleep, run_canned


def _core(**overrides: object) -> CacheCore:
    options: dict[str, object] = {
        "serializer": "json",
        "secret": None,
        "jitter": 0.0,
        "stampede": "lock",
        "local": None,
        "local_ttl": None,
        "beta": 1.0,
        "lock_ttl": 1.0,
        "wait_timeout": 0.5,
        "stale_ttl": None,
        "negative_ttl": None,
        "error_backoff": 1.0,
        "max_value_bytes": 1000,
        "rng": random.Random(1),
    }
    options.update(overrides)
    return CacheCore("ns", 60, **options)  # type: ignore[arg-type]


ENTRY = b"rp2:json:99999999999999:12:0:[1,2]"


def test_hit_is_one_script_call() -> None:
    core = _core()
    value, effects = run_canned(core.get("k", None), [[1, ENTRY, 0, 5000, b"0"]])
    assert value == [1, 2]
    assert len(effects) == 1
    assert isinstance(effects[0], Eval)
    assert effects[0].script.name == "cache_get"
    assert effects[0].keys == (b"{cache:ns:k}", b"{cache:ns:k}:lock", b"{cache:ns}:gen")


def test_miss_with_lock_loads_measures_and_stores() -> None:
    core = _core()
    entry = core.entry_key("k")
    plan = core.read_or_load(entry, lambda: {"a": 1}, None, "tok")
    (value, refresh), effects = run_canned(plan, [[0, None, 1, 0, b"0"], 10.0, {"a": 1}, 10.25, 1])
    assert (value, refresh) == ({"a": 1}, False)
    kinds = [type(e) for e in effects]
    assert kinds == [Eval, Now, Call, Now, Eval]
    store = effects[-1]
    assert isinstance(store, Eval)
    assert store.script.name == "cache_set"
    tag, payload, soft, stale, delta, token = store.args[:6]
    assert (tag, payload, soft, stale, delta, token) == (
        "json",
        b'{"a":1}',
        60000,
        30000,
        250,
        "tok",
    )


def test_waiter_polls_then_reads_the_result() -> None:
    core = _core()
    entry = core.entry_key("k")
    plan = core.read_or_load(entry, lambda: 0, None, "tok")
    replies = [
        [0, None, 0, 0, b"0"],
        100.0,
        None,
        [0, None, 0, 0, b"0"],
        100.02,
        None,
        [1, ENTRY, 0, 9, b"0"],
    ]
    (value, _), effects = run_canned(plan, replies)
    assert value == [1, 2]
    assert [type(e) for e in effects] == [Eval, Now, Sleep, Eval, Now, Sleep, Eval]


def test_waiter_gives_up_with_a_typed_timeout() -> None:
    core = _core()
    plan = core.read_or_load(core.entry_key("k"), lambda: 0, None, "tok")
    with pytest.raises(LockTimeoutError):
        run_canned(plan, [[0, None, 0, 0, b"0"], 100.0, None, [0, None, 0, 0, b"0"], 100.6])


def test_stale_entry_returns_at_once_and_asks_for_a_refresh() -> None:
    core = _core()
    plan = core.read_or_load(core.entry_key("k"), lambda: 0, None, "tok")
    (value, refresh), effects = run_canned(plan, [[2, ENTRY, 1, 0, b"0"]])
    assert (value, refresh, len(effects)) == ([1, 2], True, 1)


def test_failed_loader_keeps_the_lock_for_the_backoff() -> None:
    core = _core()

    def broken() -> int:
        raise RuntimeError("down")

    plan = core.read_or_load(core.entry_key("k"), broken, None, "tok")
    assert isinstance(next(plan), Eval)
    assert isinstance(plan.send([0, None, 1, 0, b"0"]), Now)
    assert isinstance(plan.send(1.0), Call)
    unlock = plan.throw(RuntimeError("down"))
    assert isinstance(unlock, Eval)
    assert unlock.script.name == "cache_unlock"
    assert unlock.args == ("tok", 1000)  # kept for error_backoff, not deleted
    with pytest.raises(RuntimeError, match="down"):
        plan.send(1)


def test_foreign_entry_is_reloaded_not_decoded() -> None:
    core = _core()
    foreign = b"rp2:pickle-hmac:99999999999999:0:0:\x80\x04"
    plan = core.read_or_load(core.entry_key("k"), lambda: "fresh", None, "tok")
    (value, _), effects = run_canned(plan, [[1, foreign, 0, 9, b"0"], 0.0, "fresh", 0.1, 1])
    assert value == "fresh"
    assert [type(e) for e in effects] == [Eval, Now, Call, Now, Eval]
    assert core.stats["malformed"] == 1


def test_jitter_bounds() -> None:
    core = _core(jitter=0.25)
    values = [core.soft_ms(None) for _ in range(500)]
    assert min(values) >= 45000
    assert max(values) <= 60000
    with pytest.raises(ConfigurationError):
        core.soft_ms(0)


_BAD_KEYS = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.floats(),
    st.just(""),
    st.text(min_size=1).map(lambda t: t + "{"),
    st.text(min_size=1).map(lambda t: "}" + t),
    st.text().map(lambda t: t + "\x00"),
    st.text(min_size=1025, max_size=1100, alphabet="ab"),
)


@settings(max_examples=200, deadline=None)
@given(key=_BAD_KEYS)
def test_fuzzed_bad_keys_fail_before_any_io(key: object) -> None:
    """A client on a closed port: any I/O would be a BackendError, not a ConfigurationError."""
    cache = Cache(
        redis.Redis(port=1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0)), "ns", 60
    )
    for call in (
        lambda: cache.get(key),  # type: ignore[arg-type]
        lambda: cache.set(key, 1),  # type: ignore[arg-type]
        lambda: cache.delete(key),  # type: ignore[arg-type]
        lambda: cache.get_or_load(key, lambda: 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError):
            call()


@settings(max_examples=200, deadline=None)
@given(
    ttl=st.one_of(
        st.floats(max_value=0.0004),
        st.just(float("nan")),
        st.just(float("inf")),
        st.booleans(),
        st.text(),
        st.none().map(lambda _: -1),
    )
)
def test_fuzzed_bad_ttls_fail_before_any_io(ttl: object) -> None:
    client = redis.Redis(port=1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(ConfigurationError):
        Cache(client, "ns", ttl)  # type: ignore[arg-type]
    cache = Cache(client, "ns", 60)
    with pytest.raises(ConfigurationError):
        cache.set("k", 1, ttl=ttl)  # type: ignore[arg-type]


def test_get_or_load_is_one_plan_that_starts_the_refresh() -> None:
    """The facade's one call: a stale hit returns at once and the refresh plan is handed to the
    runner's ``spawn`` through `Call` (no second call into the core)."""
    started: list[object] = []
    core = _core(spawn=started.append)
    value, effects = run_canned(
        core.get_or_load("k", lambda: 0, None), [[2, ENTRY, 1, 0, b"0"], None]
    )
    assert value == [1, 2]
    assert [type(e) for e in effects] == [Eval, Call]
    spawn = effects[1]
    assert isinstance(spawn, Call)
    assert spawn.func == started.append
    assert inspect.isgenerator(spawn.args[0])


def test_get_or_load_follower_waits_for_the_leader_through_call() -> None:
    flights = SingleFlight()
    core = _core(flights=flights)
    leader = flights.join(core.entry_key("k"))
    assert leader is None  # this test leads: the plan below follows
    value, effects = run_canned(core.get_or_load("k", lambda: 0, None), [(True, "led")])
    assert value == "led"
    assert len(effects) == 1
    wait = effects[0]
    assert isinstance(wait, Call)
    assert wait.func == flights.wait


def test_get_or_load_checks_its_arguments_before_any_effect() -> None:
    async def loader() -> int:
        return 1

    with pytest.raises(ConfigurationError):
        next(_core().get_or_load("k", loader, None))  # an async loader for the sync flavour
    with pytest.raises(ConfigurationError):
        next(_core(asynchronous=True).get_or_load("k", lambda: 1, None))
    with pytest.raises(ConfigurationError):
        next(_core().get_or_load_many(["a"], lambda keys: {}, 0))


def test_hit_is_one_pipelined_read_without_the_script() -> None:
    """Issue 16: a hit's value does not pass through Lua: the entry, its generation and the
    server's clock (``MGET`` + ``TIME``, one round trip), judged in the client."""
    core = _core(lean_hits=True)
    value, effects = run_canned(core.get("k", None), [[[ENTRY, b"0"], (1_000, 0)]])
    assert value == [1, 2]
    assert len(effects) == 1
    assert isinstance(effects[0], Pipeline)
    assert effects[0].effects == (
        Command(("MGET", b"{cache:ns:k}", b"{cache:ns}:gen")),
        Command(("TIME",)),
    )


def test_lean_hits_stay_off_on_a_cluster() -> None:
    """On a cluster ``TIME`` could be answered by another node than the entry's: the script."""
    core = _core(lean_hits=True, cluster=True)
    value, effects = run_canned(core.get("k", None), [[1, ENTRY, 0, 5000, b"0"]])
    assert value == [1, 2]
    assert [type(e) for e in effects] == [Eval]


def test_lean_judgment_matches_the_script() -> None:
    """Soft expiry on the server's clock, the generation, the header: as cache_get.lua."""
    core = _core()
    entry = b"rp2:json:5000:100:3:[1]"
    assert core.judge(entry, b"3", 4_000) == (1, 1_000)  # fresh, 1 s left
    assert core.judge(entry, b"3", 5_000) == (2, 0)  # past the soft expiry: stale
    assert core.judge(entry, b"4", 4_000) == (0, 0)  # written before a clear: a miss
    assert core.judge(None, b"3", 4_000) == (0, 0)
    assert core.judge(b"rp1:json:5000:100:3:[1]", b"3", 4_000) == (-1, 0)
    assert core.judge(b"rp2:json:0:100:3:[1]", b"3", 4_000) == (1, -1)  # no soft expiry
    assert core.judge(b"rp2:json:=5000:100:3:[1]", b"3", 4_999) == (1, 1)
    # xfetch: 100 ms of loading, beta 1, -log(r) = 20: refreshed 2 s before the expiry.
    assert core.judge(entry, b"3", 4_000, r=math.exp(-20)) == (3, 1_000)
    assert core.judge(entry, b"3", 4_000, r=1.0) == (1, 1_000)


def test_lean_get_or_load_hit_and_stale_entry() -> None:
    """A fresh hit: the pipelined read only. A stale entry: then the script, which takes the
    recompute lock (and the same xfetch draw decides there)."""
    core = _core(lean_hits=True)
    plan = core.read_or_load(core.entry_key("k"), lambda: 0, None, "tok")
    (value, refresh), effects = run_canned(plan, [[[ENTRY, None], (1, 0)]])
    assert (value, refresh, [type(e) for e in effects]) == ([1, 2], False, [Pipeline])
    stale = b"rp2:json:1000:12:0:[1,2]"
    plan = core.read_or_load(core.entry_key("k"), lambda: 0, None, "tok")
    (value, refresh), effects = run_canned(plan, [[[stale, None], (2, 0)], [2, stale, 1, 0, b"0"]])
    assert (value, refresh) == ([1, 2], True)
    assert [type(e) for e in effects] == [Pipeline, Eval]
    assert isinstance(effects[1], Eval)
    assert effects[1].args[:2] == (1, "tok")


def test_a_big_value_is_stored_in_one_block_without_lua_seeing_it() -> None:
    core = _core(max_value_bytes=10**6, stampede=None)
    core.big_value_bytes = 100
    value = "x" * 200
    stored, effects = run_canned(core.set("k", value, 1.0), [[True, 1, 201, 1]])
    assert stored is True
    (block,) = effects
    assert isinstance(block, Multi)
    bound, prep, append, commit = block.effects
    entry, lock, gen = b"{cache:ns:k}", b"{cache:ns:k}:lock", b"{cache:ns}:gen"
    scratch = b"{cache:ns:k}:set"
    # first a TTL for the scratch key, whatever else runs (the prep's SET replaces it)
    assert bound == Command(("SET", scratch, b"", "PX", 60_000, "NX"))
    assert isinstance(prep, Eval)
    assert prep.script.name == "cache_set_prep"
    assert prep.keys == (entry, lock, gen, scratch)
    assert prep.args == ("json", 1000, 0, 0, "", "", 0, 60_000)  # no payload
    assert append == Command(("APPEND", scratch, f'"{value}"'.encode()))
    assert isinstance(commit, Eval)
    assert commit.script.name == "cache_set_commit"
    assert commit.keys == (scratch, entry, lock)
    assert commit.args == (202, 0, "", 1000, core.channel, core.origin)
    # Below the threshold: the one script, payload included.
    stored, effects = run_canned(core.set("k", "small", 1.0), [1])
    assert [type(e) for e in effects] == [Eval]
    assert effects[0].script.name == "cache_set"  # type: ignore[union-attr]


def test_a_big_store_dropped_or_refused_in_its_block() -> None:
    core = _core(max_value_bytes=10**6)
    core.big_value_bytes = 1
    stored, _ = run_canned(core.set("k", 1, 1.0, only_absent=True), [[True, 0, 1, 0]])
    assert stored is False
    refused = ScriptError("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(ScriptError, match="WRONGTYPE"):
        run_canned(core.set("k", 1, 1.0, only_absent=True), [[True, refused, 1, 0]])


def test_cluster_scratch_key_shares_the_entry_slot() -> None:
    core = _core(cluster=True)
    entry = core.entry_key("k")
    scratch = core.scratch_key(entry)
    assert scratch.startswith(entry[: entry.index(b"}") + 1])
    assert scratch.endswith(b":w:k")
    assert redis.crc.key_slot(scratch) == redis.crc.key_slot(entry)
