"""Serializers: JSON by default, msgpack on request, pickle only by explicit name."""

from __future__ import annotations

import pytest

from redis_patterns import ConfigurationError
from redis_patterns._serializers import get_serializer


def test_json_round_trip() -> None:
    json = get_serializer("json")
    assert json.loads(json.dumps({"a": [1, 2.5, None, "é"]})) == {"a": [1, 2.5, None, "é"]}


def test_msgpack_round_trip_keeps_bytes() -> None:
    packer = get_serializer("msgpack")
    assert packer.loads(packer.dumps({"b": b"\x00\xff"})) == {"b": b"\x00\xff"}


def test_unserializable_value_names_the_type() -> None:
    with pytest.raises(ConfigurationError, match="set"):
        get_serializer("json").dumps({1, 2})


def test_unknown_serializer_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer"):
        get_serializer("yaml")


def test_malformed_json_raises_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's JSONDecodeError is a ValueError
        get_serializer("json").loads(b"\x80not json")


def test_pickle_only_by_name_and_with_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        get_serializer("pickle")
    signed = get_serializer("pickle", secret=b"k" * 32)
    assert signed.loads(signed.dumps({"a": 1})) == {"a": 1}
    assert get_serializer("json").name == "json"
