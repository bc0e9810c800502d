"""The error mapping for the replies the fault tests provoke: BUSY, NOPERM, LOADING, CLUSTERDOWN."""

from __future__ import annotations

import redis.exceptions as rex

from redis_patterns import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CrossSlotError,
    PermissionDeniedError,
    ScriptError,
    ServerBusyError,
)
from redis_patterns._runner import map_backend_error

BUSY = "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."


def test_busy_is_server_busy_error_for_scripts_and_plain_commands() -> None:
    for in_script in (True, False):
        mapped = map_backend_error(rex.ResponseError(BUSY), in_script=in_script)
        assert type(mapped) is ServerBusyError
        assert isinstance(mapped, ScriptError)
        assert "SCRIPT KILL" in str(mapped)


def test_noperm_is_permission_denied_even_inside_a_script_call() -> None:
    parsed = rex.NoPermissionError("this user has no permissions to access one of the keys")
    raw = rex.ResponseError("NOPERM User app has no permissions to run the 'flushall' command")
    for exc in (parsed, raw):
        for in_script in (True, False):
            mapped = map_backend_error(exc, in_script=in_script)
            assert type(mapped) is PermissionDeniedError
            assert isinstance(mapped, BackendError)
            assert isinstance(mapped, PermissionError)


def test_other_mappings_are_unchanged() -> None:
    assert type(map_backend_error(rex.TimeoutError("t"))) is BackendTimeoutError
    assert type(map_backend_error(rex.ConnectionError("c"))) is BackendUnavailableError
    assert type(map_backend_error(rex.ResponseError("ERR x"), in_script=True)) is ScriptError
    assert type(map_backend_error(rex.ResponseError("ERR x"))) is BackendError


def test_server_not_ready_replies_are_unavailable_for_scripts_and_plain_commands() -> None:
    """Parsed by redis-py (the code stripped) or as raw text (e.g. an old client's reply)."""
    replies = [
        rex.BusyLoadingError("Valkey is loading the dataset in memory"),
        rex.ClusterDownError("The cluster is down"),
        rex.ClusterDownError("Hash slot not served"),
        rex.MasterDownError(
            "Link with MASTER is down and replica-serve-stale-data is set to 'no'."
        ),
        rex.TryAgainError("Multiple keys request during rehashing of slot"),
        rex.ResponseError("LOADING Redis is loading the dataset in memory"),
        rex.ResponseError("CLUSTERDOWN The cluster is down"),
        rex.ResponseError("MASTERDOWN Link with MASTER is down"),
        rex.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rex.SlotNotCoveredError('Slot "12" is not covered by the cluster.'),
        rex.RedisClusterException("Redis Cluster cannot be connected. Please provide ..."),
    ]
    for exc in replies:
        for in_script in (True, False):
            mapped = map_backend_error(exc, in_script=in_script)
            assert type(mapped) is BackendUnavailableError, (exc, in_script)
            assert str(exc) in str(mapped)


def test_cluster_client_exceptions_are_the_librarys() -> None:
    cross = rex.RedisClusterException("MGET - all keys must map to the same key slot")
    assert type(map_backend_error(cross)) is CrossSlotError
    odd = rex.RedisClusterException("No way to dispatch this command to Redis Cluster.")
    assert type(map_backend_error(odd)) is BackendError
    # A script's own error that merely mentions the words stays the script's.
    own = rex.ResponseError("ERR user_script:1: loading failed")
    assert type(map_backend_error(own, in_script=True)) is ScriptError
