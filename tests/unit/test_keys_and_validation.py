"""Key building and argument checks: every refusal names the argument."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from redis_patterns import ConfigurationError
from redis_patterns._keys import check_name, make_key
from redis_patterns._validate import check_int, duration_ms


def test_make_key_puts_the_name_in_the_hash_tag() -> None:
    assert make_key("lock", b"orders:42") == b"{lock:orders:42}"
    assert make_key("lock", b"orders:42", "fence") == b"{lock:orders:42}:fence"


def test_names_may_be_str_or_bytes() -> None:
    assert check_name("café") == "café".encode()
    assert check_name(b"\xff\xfe") == b"\xff\xfe"


@pytest.mark.parametrize("bad", ["", b"", None, 42, 1.0, True, ["x"], "a{b", "a}b", "a\x00b"])
def test_bad_names_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        check_name(bad)


def test_name_length_is_capped() -> None:
    check_name("x" * 1024)
    with pytest.raises(ConfigurationError, match="1024"):
        check_name("x" * 1025)


def test_raw_keys_may_carry_their_own_hash_tag() -> None:
    assert check_name("{user:1}:n", raw_key=True) == b"{user:1}:n"
    with pytest.raises(ConfigurationError):
        check_name("a\x00", raw_key=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1000), (0.25, 250), (timedelta(seconds=2), 2000), (0.0015, 2), (30.0, 30000)],
)
def test_durations_become_milliseconds(value: Any, expected: int) -> None:
    assert duration_ms(value, "ttl") == expected


@pytest.mark.parametrize(
    "bad",
    [
        0,
        -1,
        0.0001,
        math.nan,
        math.inf,
        -math.inf,
        True,
        "5",
        None,
        2**64,
        1.797693134862316e305,
        timedelta(0),
    ],
)
def test_bad_durations_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        duration_ms(bad, "ttl")


def test_zero_duration_when_allowed() -> None:
    assert duration_ms(0, "delay", allow_zero=True) == 0


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_check_int_refuses_non_ints(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        check_int(bad, "limit")


def test_check_int_minimum() -> None:
    assert check_int(0, "limit", minimum=0) == 0
    with pytest.raises(ConfigurationError, match=">= 1"):
        check_int(0, "limit", minimum=1)


def test_glob_input_is_escaped_and_capped() -> None:
    """RELIABILITY §4: user input in SCAN MATCH matches itself; only '*' may stay a wildcard."""
    from redis_patterns._keys import glob_match

    assert glob_match("orders:*") == b"orders:*"
    assert glob_match("a?[b]\\c*", wildcards=False) == b"a\\?\\[b\\]\\\\c\\*"
    assert glob_match(b"x?") == b"x\\?"
    assert glob_match("*" * 8) == b"*" * 8
    for bad in ("*" * 9, "x" * 257, "", "a{b}", None, 5):
        with pytest.raises(ConfigurationError):
            glob_match(bad)
