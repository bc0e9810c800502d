"""Key building and argument checks: every refusal names the argument."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from redis_patterns import ConfigurationError
from redis_patterns._keys import check_name, make_key
from redis_patterns._validate import (
    MAX_DURATION_MS,
    check_bool,
    check_callable,
    check_int,
    check_number,
    duration_ms,
)


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


def test_durations_up_to_the_bound_are_accepted() -> None:
    assert MAX_DURATION_MS == 10**12  # 10^9 s, about 31.7 years: the docs say so
    assert duration_ms(MAX_DURATION_MS / 1000, "ttl") == MAX_DURATION_MS
    assert duration_ms(MAX_DURATION_MS // 1000, "ttl") == MAX_DURATION_MS
    assert duration_ms(timedelta(milliseconds=MAX_DURATION_MS), "ttl") == MAX_DURATION_MS


@pytest.mark.parametrize(
    "bad",
    [
        (MAX_DURATION_MS + 1) / 1000,
        MAX_DURATION_MS // 1000 + 1,
        timedelta(milliseconds=MAX_DURATION_MS + 1),
        10**400,  # float() of it would raise OverflowError
        2**63 / 1000,
    ],
)
def test_durations_beyond_the_bound_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl must be at most 1000000000 s"):
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


# --- client-supplied rate-limit keys (the web integrations' normalization) ----------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from redis_patterns.integrations.ratelimit_keys import (  # noqa: E402
    EXEMPT,
    HASHED_PREFIX,
    limiter_key,
    normalize_key,
)


def raw_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    "value", ["user:42", "café", b"\xff\xfe", "x" * 1024, "::1", "#sha", chr(0xDCFF), chr(0xD800)]
)
def test_valid_keys_are_kept_verbatim(value: str | bytes) -> None:
    assert normalize_key(value) == raw_bytes(value)


@pytest.mark.parametrize(
    "value", ["", b"", "a{b", "}", "a\x00b", "x" * 1025, "#sha256:abc", b"#sha256:"]
)
def test_other_keys_are_hashed_behind_a_marker(value: str | bytes) -> None:
    key = normalize_key(value)
    assert key.startswith(HASHED_PREFIX)
    assert len(key) == len(HASHED_PREFIX) + 64
    assert check_name(key) == key  # a valid limiter key


def test_a_verbatim_key_never_equals_a_hashed_one() -> None:
    hashed = normalize_key("a{b")
    # the hashed form itself, sent by a client, is hashed again rather than aliasing "a{b"
    assert normalize_key(hashed) != hashed
    assert normalize_key(hashed.decode()) != hashed


@given(
    st.one_of(st.text(max_size=40), st.binary(max_size=40), st.text(min_size=1020, max_size=1030))
)
def test_normalized_keys_are_valid_and_distinct(value: str | bytes) -> None:
    key = normalize_key(value)
    assert check_name(key) == key
    raw = raw_bytes(value)
    verbatim = key == raw
    assert verbatim != key.startswith(HASHED_PREFIX)
    other = raw + b"!"
    assert normalize_key(other) != key


def test_limiter_key_fallback_and_exemption() -> None:
    assert limiter_key(EXEMPT, lambda: "ip") is None
    assert limiter_key(None, lambda: "10.0.0.1") == b"10.0.0.1"
    assert limiter_key("", lambda: "10.0.0.1") == b"10.0.0.1"
    assert limiter_key(b"", lambda: "10.0.0.1") == b"10.0.0.1"
    assert limiter_key("k{", lambda: "ip") == normalize_key("k{")
    with pytest.raises(TypeError, match="returned int"):
        limiter_key(42, lambda: "ip")
    with pytest.raises(TypeError):
        normalize_key(None)  # type: ignore[arg-type]
    assert repr(EXEMPT) == "EXEMPT"


@pytest.mark.parametrize(
    ("check", "bad"),
    [
        (lambda v: check_name(v), 42),
        (lambda v: duration_ms(v, "ttl"), "5"),
        (lambda v: check_int(v, "limit"), 1.0),
        (lambda v: check_number(v, "rate"), "1"),
        (lambda v: check_bool(v, "flag"), 1),
        (lambda v: check_callable(v, "on_lost"), 42),
    ],
)
def test_a_wrong_type_is_both_configuration_and_type_error(check: Any, bad: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check(bad)
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, ValueError)


def test_a_wrong_value_is_not_a_type_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_number(-1, "rate", positive=True)
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    ("value", "options"),
    [
        (math.nan, {}),
        (math.inf, {}),
        (0, {"positive": True}),
        (-0.5, {"minimum": 0}),
        (0.2, {"minimum": 0, "maximum": 0.1}),
        (True, {}),
        (10**400, {}),  # beyond any double: float() would raise OverflowError
    ],
)
def test_bad_numbers_are_refused(value: Any, options: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        check_number(value, "rate", **options)


def test_numbers_keep_their_type() -> None:
    three = check_number(3, "n")
    assert three == 3
    assert isinstance(three, int)
    assert check_number(0.1, "n", minimum=0, maximum=0.1) == 0.1


def test_optional_callables() -> None:
    check_callable(None, "on_gap", optional=True)
    check_callable(print, "on_gap")
    with pytest.raises(ConfigurationError, match="on_gap"):
        check_callable(None, "on_gap")


def test_huge_int_arguments_are_configuration_errors_not_overflow() -> None:
    # These used to raise OverflowError from float() or math.isnan() on a 400-digit int.
    from redis_patterns._core.ratelimit import TokenBucketCore
    from redis_patterns._core.redlock import RedlockCore
    from redis_patterns._core.transaction import transaction_plan

    with pytest.raises(ConfigurationError, match="refill_rate"):
        TokenBucketCore(10, 10**400)
    with pytest.raises(ConfigurationError, match="drift_factor"):
        RedlockCore(["a", "b", "c"], "x", 10, 10**400, 0, 0.1, None, None)
    plan = transaction_plan(print, ["k"], retries=1, backoff=10**400, sync=True)
    with pytest.raises(ConfigurationError, match="backoff"):
        next(plan)
