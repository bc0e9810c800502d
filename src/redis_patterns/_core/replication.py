"""``wait_replicas``: acknowledge a write only once replicas confirmed it (``WAIT``), as a plan.

Replication is asynchronous: a primary acknowledges a write before any replica has it, and a
failover that promotes a replica which never got it loses the write. ``WAIT n`` right after the
write, on the same connection and in the same round trip, says how many replicas have it; fewer
than ``n`` raises `NotReplicatedError` instead of acknowledging. It narrows the window, it does
not close it (a replica that confirmed may not be the one promoted; see docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._errors import ConfigurationError, NotReplicatedError
from .._plan import Eval, Plan, Replicated
from .._validate import check_int

__all__ = ["WAIT_TIMEOUT_MS", "check_wait_replicas", "replicated"]

WAIT_TIMEOUT_MS = 1000
"""How long a write waits for its replicas before `NotReplicatedError` (as `Lock`'s cap)."""


def check_wait_replicas(value: object, *, cluster: bool) -> int:
    """Validate a ``wait_replicas`` option before any I/O."""
    replicas = check_int(value, "wait_replicas", minimum=0)
    if replicas and cluster:
        raise ConfigurationError(
            "wait_replicas needs a standalone or Sentinel client: a cluster client sends WAIT "
            "to another node than the write's"
        )
    return replicas


def replicated(
    write: Eval, replicas: int, what: str, wrote: Callable[[Any], bool] = lambda reply: True
) -> Plan[Any]:
    """Run ``write``; with ``replicas``, also ``WAIT`` for them (one round trip) and raise
    `NotReplicatedError` if fewer confirm within `WAIT_TIMEOUT_MS`. Returns the write's reply.

    ``wrote(reply)`` says whether the script wrote anything: when it did not, what WAIT says
    is about earlier writes of the connection, not this one, and is ignored.
    """
    if not replicas:
        return (yield write)
    reply, confirmed = yield Replicated(write, replicas, WAIT_TIMEOUT_MS)
    if confirmed < replicas and wrote(reply):
        raise NotReplicatedError(
            f"{what} was applied on the primary, but only {confirmed} of {replicas} replicas "
            f"confirmed it within {WAIT_TIMEOUT_MS} ms: a failover now could lose it",
            confirmed=confirmed,
            wanted=replicas,
        )
    return reply
