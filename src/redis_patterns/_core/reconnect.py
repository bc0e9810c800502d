"""Riding out a server that is briefly away: what a long-running loop retries, and how long
it waits between attempts (shared by `Worker.run` and `WriteBehind.run`)."""

from __future__ import annotations

from .._errors import BackendTimeoutError, BackendUnavailableError
from .._plan import Plan, Sleep
from .backoff import backoff_delay

__all__ = ["TRANSIENT", "reconnect_backoff"]

# Refused or broken connections, a server still loading its data (redis-py's BusyLoadingError
# is a ConnectionError) and replies that did not come in time: all pass once the server is
# back. Anything else (a bad script, missing permissions) would fail again: it propagates.
TRANSIENT = (BackendUnavailableError, BackendTimeoutError)


def reconnect_backoff(attempt: int) -> Plan[None]:
    """Wait after the ``attempt``-th failure in a row: 0.05 s doubling up to 2 s."""
    yield Sleep(backoff_delay(attempt, 0.05, 2.0))
