"""The error mapping for the replies the fault tests provoke: BUSY and NOPERM are typed."""

from __future__ import annotations

import redis.exceptions as rex

from redis_patterns import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
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
