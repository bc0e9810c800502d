"""Reading and driving replicated topologies: cluster maps, replication links, bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from ._embedded import EmbeddedServer

__all__ = ["ClusterNodeState", "Promotion", "cluster_nodes", "info_fields", "wait_until"]

# Flags under which a node's entry says nothing reliable about the cluster's current shape.
_UNSETTLED = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True, slots=True)
class Promotion:
    """A replica that took over from a primary (a failover or a kill), and how long it took.

    Attributes:
        old: the server that was the primary.
        new: the server that is the primary now.
        at: when the fault (or the failover command) was issued, on ``time.monotonic()``'s
            clock (the one `History` records on), to line events up with it.
        promoted_after: seconds from ``at`` until ``new`` itself reported ``role:master``.
        settled_after: seconds from ``at`` until every live node (or Sentinel) agreed on the
            new map and every replica's link was up again.
    """

    old: EmbeddedServer
    new: EmbeddedServer
    at: float
    promoted_after: float
    settled_after: float

    @property
    def address(self) -> tuple[str, int]:
        """The new primary's ``(host, port)``."""
        return ("127.0.0.1", self.new.port or 0)


@dataclass(frozen=True, slots=True)
class ClusterNodeState:
    """One line of ``CLUSTER NODES``: a node as some node of the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def settled(self) -> bool:
        """Neither failing, nor suspected, nor still being introduced."""
        return not (self.flags & _UNSETTLED)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cluster_nodes(client: redis.Redis) -> list[ClusterNodeState]:
    """``CLUSTER NODES`` parsed; slot-migration markers (``[slot->-id]``) are left out."""
    states = []
    for line in _text(client.execute_command("CLUSTER", "NODES")).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        slots = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        states.append(
            ClusterNodeState(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1] or 0),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return states


def info_fields(reply: Any) -> dict[str, str]:
    """An ``INFO``-style reply (text, or a dict once redis-py parsed it) as a str dict."""
    if isinstance(reply, Mapping):
        return {_text(k): _text(v) for k, v in reply.items()}
    text = _text(reply)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def replication_up(client: redis.Redis) -> bool:
    """Whether a replica has finished its sync and its link to the primary is up."""
    info = client.info("replication")
    return (
        info.get("role") == "slave"
        and info.get("master_link_status") == "up"
        and int(info.get("master_sync_in_progress", 0)) == 0
    )


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    message: str | Callable[[], str],
    *,
    interval: float = 0.05,
) -> float:
    """Poll ``condition`` until it holds; return the seconds it took.

    A server between states (restarting, refusing, loading) makes ``condition`` raise a redis
    or socket error: that counts as "not yet". Raises `TimeoutError` with ``message`` after
    ``timeout`` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(message() if callable(message) else message)
        time.sleep(interval)


def running(servers: Iterable[EmbeddedServer]) -> list[EmbeddedServer]:
    return [server for server in servers if server.running]
