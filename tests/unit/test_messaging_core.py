"""The messaging cores without a server: canned replies, pure reconnect and liveness policy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from redis_patterns import BackendError, ConfigurationError
from redis_patterns._core.pubsub import PublisherCore, SubscriberCore, encode_message
from redis_patterns._core.streams import QueueCore
from redis_patterns._core.streams_worker import WorkerCore
from redis_patterns._plan import Command, Eval, Now, run_canned

CORE = Path(__file__).resolve().parents[2] / "src" / "redis_patterns" / "_core"


@pytest.mark.parametrize("module", ["streams.py", "pubsub.py"])
def test_core_imports_no_io(module: str) -> None:
    tree = ast.parse((CORE / module).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"redis", "socket", "asyncio", "time", "threading"}


def subscriber(**kwargs: object) -> SubscriberCore:
    options: dict[str, object] = {
        "sharded": False,
        "health_check_interval": 1.0,
        "max_backoff": 0.4,
    }
    options.update(kwargs)
    return SubscriberCore(["a"], ["p.*"], **options)  # type: ignore[arg-type]


def test_gap_opens_once_per_break_and_closes_on_reconnect() -> None:
    core = subscriber()
    assert core.on_connected(0.0) is None  # the first connection is not a gap
    core.on_lost(10.0, "reset")
    core.on_lost(10.1, "refused")  # still the same gap: reconnect attempts failing
    assert core.gaps == 1
    assert core.retry_delay() == 0.025
    gap = core.on_connected(10.5)
    assert gap is not None
    assert (gap.started, gap.ended, gap.error) == (10.0, 10.5, "reset")
    assert gap.duration == pytest.approx(0.5)
    assert core.on_connected(11.0) is None


def test_backoff_starts_immediately_then_doubles_to_the_cap() -> None:
    core = subscriber()
    core.on_connected(0.0)
    delays = []
    for _ in range(7):
        core.on_lost(1.0, "x")
        delays.append(core.retry_delay())
    assert delays == [0.0, 0.025, 0.05, 0.1, 0.2, 0.4, 0.4]


def test_liveness_pings_when_quiet_and_declares_dead_without_pong() -> None:
    core = subscriber()
    core.on_connected(0.0)
    assert not core.ping_due(0.9)
    assert core.ping_due(1.0)
    core.on_ping(1.0)
    assert not core.ping_due(1.5)
    assert not core.is_dead(1.9)
    assert core.is_dead(2.0)
    core.on_push({"type": "pong", "data": b""}, 1.5)  # any traffic revives it
    assert not core.is_dead(2.0)


def test_pushes_become_messages() -> None:
    core = subscriber()
    message = core.on_push(
        {"type": "pmessage", "pattern": b"p.*", "channel": b"p.1", "data": b"{}"}, 0.0
    )
    assert message is not None
    assert (message.channel, message.pattern, message.json()) == ("p.1", "p.*", {})
    assert core.on_push({"type": "subscribe", "channel": b"a", "data": 1}, 0.0) is None


def test_sharded_subscriber_sends_shard_channels_only() -> None:
    core = SubscriberCore(["b", "a"], [], sharded=True, health_check_interval=1, max_backoff=1)
    assert core.all_link_args() == ([], [], [b"a", b"b"])
    with pytest.raises(ConfigurationError):
        core.check_channels(["x.*"], "pattern")


def test_encode_message() -> None:
    assert encode_message(b"x") == b"x"
    assert encode_message("é") == "é".encode()
    assert encode_message({"a": [1]}) == b'{"a":[1]}'
    with pytest.raises(ConfigurationError):
        encode_message(object())


def test_publish_plan() -> None:
    value, effects = run_canned(PublisherCore(True).publish("ch", "hi"), [3])
    assert value == 3
    assert effects == [Command(("SPUBLISH", b"ch", b"hi"))]


def test_fetch_claims_first_then_reads() -> None:
    worker = WorkerCore(QueueCore("q", "g", None), "c", batch=5, block=1.0, claim_idle=4.0,
                        max_deliveries=3)  # fmt: skip
    replies = [
        0,  # XGROUP CREATE
        100.0,  # Now
        [b"0-0", [[b"1-1", 2, [b"n", b"1"]]], [b"9-9"], []],  # claim: one entry, one deleted
    ]
    messages, effects = run_canned(worker.fetch(), replies)
    assert isinstance(effects[0], Command)
    assert isinstance(effects[1], Now)
    assert isinstance(effects[2], Eval)
    assert [(m.id, m.data, m.deliveries) for m in messages] == [("1-1", {"n": 1}, 2)]
    assert worker.counters.deleted_ids == ["9-9"]
    # Next cycle, 1 s later: the claim is not due (every 2 s), so it reads, blocking <= 2 s.
    messages, effects = run_canned(worker.fetch(), [101.0, None])
    assert messages == []
    assert effects[1] == Command(
        (
            "XREADGROUP",
            "GROUP",
            b"g",
            b"c",
            "COUNT",
            5,
            "BLOCK",
            1000,
            "STREAMS",
            b"{stream:q}",
            ">",
        )
    )


def test_fetch_recreates_a_missing_group() -> None:
    worker = WorkerCore(QueueCore("q", "g", None), "c", batch=5, block=1.0, claim_idle=4.0,
                        max_deliveries=3)  # fmt: skip
    worker._group_ready = True
    worker._last_claim = 100.0
    messages, effects = run_canned(
        worker.fetch(), [100.5, BackendError("NOGROUP No such key or consumer group"), 0]
    )
    assert messages == []
    assert effects[-1] == Command(("XGROUP", "CREATE", b"{stream:q}", b"g", "0", "MKSTREAM"))


def test_reaping_is_one_bounded_script_per_interval() -> None:
    """Every min(reap_idle / 2, 60 s): one script deleting at most 100 consumers; none at start."""
    worker = WorkerCore(QueueCore("q", "g", None), "c", batch=5, block=1.0, claim_idle=4.0,
                        max_deliveries=3, reap_idle=300.0)  # fmt: skip
    worker._group_ready = True
    claim = [b"0-0", [], [], []]

    def cycle(now: float, *replies: object) -> list[Eval]:
        _, effects = run_canned(worker.fetch(), [now, claim, *replies])
        return [e for e in effects if isinstance(e, Eval) and e.script.name == "streams_reap"]

    assert cycle(0.0, None) == []  # the first cycle only starts the clock
    assert cycle(57.0, None) == []
    [reap] = cycle(60.0, [b"gone"], None)
    assert reap.keys == (b"{stream:q}",)
    assert reap.args == (b"g", 300_000, 100)
    assert worker.counters.reaped == 1
    assert cycle(100.0, None) == []
    assert len(cycle(120.0, [], None)) == 1
    assert worker.counters.reaped == 1
    short = WorkerCore(QueueCore("q", "g", None), "c", batch=5, block=1.0, claim_idle=4.0,
                       max_deliveries=3, reap_idle=10.0)  # fmt: skip
    assert short.reap_every_ms == 5_000
    off = WorkerCore(QueueCore("q", "g", None), "c", batch=5, block=1.0, claim_idle=4.0,
                     max_deliveries=3)  # fmt: skip
    assert off.reap_idle_ms is None


def test_replay_plan_stops_at_the_bound_it_was_given() -> None:
    queue = QueueCore("q", "g", None)
    first = [b"5-0", [b"1-0", b"9-0", b"2-0", b"9-1"], []]
    second = [b"5-0", [b"5-0", b"9-2"], []]
    result, effects = run_canned(queue.replay_dead_letters(None, None, 2), [first, second])
    assert result.replayed == {"1-0": "9-0", "2-0": "9-1", "5-0": "9-2"}
    assert [e.args[2:] for e in effects if isinstance(e, Eval)] == [
        ("oldest", 2, "+"),
        ("oldest", 2, "5-0"),  # the newest letter when the replay began: later ones wait
    ]


def test_the_next_attempt_is_a_deadline_not_a_sleep() -> None:
    core = subscriber()
    core.on_connected(0.0)
    core.on_lost(1.0, "x")
    assert core.retry_wait(1.0) == 0.0  # the first retry is immediate
    core.on_lost(1.0, "x")
    assert core.retry_wait(1.0) == pytest.approx(0.025)
    assert core.retry_wait(1.01) == pytest.approx(0.015)  # time spent polling counts
    assert core.retry_wait(1.1) == 0.0


def test_only_a_sunsubscribe_for_a_channel_still_held_ends_the_link() -> None:
    core = SubscriberCore(["a"], [], sharded=True, health_check_interval=1.0, max_backoff=0.4)
    assert core.ended_by_server({"type": "sunsubscribe", "channel": b"a", "data": 0})
    assert core.ended_by_server({"type": "sunsubscribe", "channel": b"b", "data": 0}) is None
    assert core.ended_by_server({"type": "unsubscribe", "channel": b"a", "data": 0}) is None
    assert core.ended_by_server({"type": "smessage", "channel": b"a", "data": b"x"}) is None
