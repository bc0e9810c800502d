"""How the auto-pipeline lays a batch's parts out in one write (`_autopipeline._flatten`) and
gives each part its replies back (`_replies_of`): the parts whose last command is ``TIME``
share one, sent after everything else."""

from __future__ import annotations

from typing import Any

from redis_patterns._autopipeline import _flatten, _replies_of


def _parts(*commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
    return [(part, len(part) == 1, None) for part in commands]


def test_trailing_times_are_one_sent_last() -> None:
    parts = _parts(
        (("MGET", "a", "g"), ("TIME",)),  # a cache hit
        (("EVALSHA", "sha", 1, "k"),),  # a limiter hit: one command
        (("MGET", "b", "g"), ("TIME",)),
        (("TIME",),),  # a lone TIME
        (("TIME",), ("GET", "c")),  # TIME first: keeps its place
    )
    commands, spans = _flatten(parts)
    assert commands == [
        ("MGET", "a", "g"),
        ("EVALSHA", "sha", 1, "k"),
        ("MGET", "b", "g"),
        ("TIME",),
        ("GET", "c"),
        ("TIME",),
    ]
    replies = ["ra", "rl", "rb", "t-own", "rc", "clock"]
    got = [_replies_of(replies, span, part[1]) for part, span in zip(parts, spans, strict=True)]
    assert got == [["ra", "clock"], "rl", ["rb", "clock"], "clock", ["t-own", "rc"]]


def test_without_a_trailing_time_nothing_moves() -> None:
    parts = _parts((("GET", "a"),), (("GET", "b"), ("PTTL", "b")))
    commands, spans = _flatten(parts)
    assert commands == [("GET", "a"), ("GET", "b"), ("PTTL", "b")]
    replies = [1, 2, 3]
    assert _replies_of(replies, spans[0], True) == 1
    assert _replies_of(replies, spans[1], False) == [2, 3]
