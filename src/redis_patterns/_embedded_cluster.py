"""`EmbeddedCluster`: a real Redis Cluster of embedded servers on loopback, with its faults."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, overload

import redis
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ._clients import safe_options
from ._embedded import EmbeddedServer, _stop_together
from ._errors import ConfigurationError, EmbeddedServerError
from ._topology import (
    ClusterNodeState,
    Promotion,
    cluster_nodes,
    info_fields,
    replication_up,
    running,
    wait_until,
)

__all__ = ["EmbeddedCluster"]


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` nodes on loopback (each with ``replicas`` replicas), no
    ``redis-cli``.

    Slots are split evenly over the masters with ``CLUSTER ADDSLOTSRANGE``, nodes introduced with
    ``CLUSTER MEET`` and replicas attached with ``CLUSTER REPLICATE``. `start` returns when every
    node reports ``cluster_state:ok``, all nodes agree on the map, and every replica has finished
    its first sync (a replica can be promoted only after that).

    With replicas, the fault helpers drive failovers the way production sees them: `failover`
    (``CLUSTER FAILOVER`` on a replica), `kill_master` (SIGKILL, then the replica's election),
    `restart_node` (a killed node rejoins, as a replica) and `move_slots` (a live reshard with
    ``MIGRATE``, as ``redis-cli --cluster reshard`` does). Each waits, bounded, until the whole
    cluster agrees again, and the failovers report how long that took (`Promotion`).

    Args:
        masters: how many masters share the 16384 slots.
        binary: as for `EmbeddedServer` (``"redis-server"`` for Redis 7).
        replicas: replicas per master.
        config: extra directives for every node. The defaults suit fast failovers: with
            replicas, ``cluster-node-timeout 1000`` (a killed master's replica is promoted
            about 1.4-1.9 s later; 2000, the default without replicas, takes 2.9-3.5 s), and
            ``repl-diskless-sync-delay 0`` (a replica's first sync starts at once, not after
            the default 5 s).
    """

    def __init__(
        self,
        masters: int = 3,
        binary: str | None = None,
        *,
        replicas: int = 0,
        config: Mapping[str, str | int] | None = None,
    ) -> None:
        if isinstance(masters, bool) or not isinstance(masters, int) or masters < 1:
            raise ConfigurationError(f"masters must be an int >= 1, got {masters!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigurationError(f"replicas must be an int >= 0, got {replicas!r}")
        options: dict[str, str | int] = {"repl-diskless-sync-delay": 0}
        if replicas:
            options["cluster-node-timeout"] = 1000
        options.update(config or {})
        self.masters_count = masters
        self.replicas_per_master = replicas
        self.nodes = [
            EmbeddedServer(binary, cluster=True, config=options)
            for _ in range(masters * (1 + replicas))
        ]

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes if node.port]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node and form the cluster (see the class docstring).

        Raises:
            EmbeddedServerError: a node did not start, or the cluster did not converge within
                ``timeout`` (the message carries a log tail).
        """
        try:
            for node in self.nodes:
                node.start()
            self._form(timeout)
        except TimeoutError as exc:
            self.stop()
            raise EmbeddedServerError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout: float) -> None:
        count = self.masters_count
        masters, replicas = self.nodes[:count], self.nodes[count:]
        for index, node in enumerate(masters):
            with _admin(node) as client:
                first = index * 16384 // count
                last = (index + 1) * 16384 // count - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            with _admin(node) as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        ports = {node.port for node in self.nodes}
        # CLUSTER REPLICATE needs the master's id, known once the handshake is over.
        wait_until(lambda: all(self._knows(n, ports) for n in replicas), timeout, self._unformed)
        for index, node in enumerate(replicas):
            master_id = self.node_id(masters[index % count])
            with _admin(node) as client:
                client.execute_command("CLUSTER", "REPLICATE", master_id)
        wait_until(self._stable, timeout, self._unformed)

    @staticmethod
    def _knows(node: EmbeddedServer, ports: set[int | None]) -> bool:
        with _admin(node) as client:
            return {s.port for s in cluster_nodes(client) if s.settled} >= ports

    def _unformed(self) -> str:
        return "the cluster did not converge\n" + self.nodes[0].log_tail()

    def stop(self) -> None:
        _stop_together(self.nodes)

    # --- the current map (every call asks the servers) -------------------------------------

    def node_id(self, node: EmbeddedServer) -> str:
        """The cluster node id of ``node`` (``CLUSTER MYID``)."""
        with _admin(node) as client:
            return _text(client.execute_command("CLUSTER", "MYID"))

    def _view(self) -> tuple[list[ClusterNodeState], dict[int, EmbeddedServer]]:
        by_port = {node.port: node for node in self.nodes if node.port}
        for node in running(self.nodes):
            with contextlib.suppress(redis.RedisError, OSError), _admin(node) as client:
                return cluster_nodes(client), by_port
        raise EmbeddedServerError("no node of the cluster is running")

    def masters(self) -> list[EmbeddedServer]:
        """The running nodes that are masters now (roles change with failovers)."""
        states, by_port = self._view()
        return [
            by_port[s.port]
            for s in sorted(states, key=lambda s: s.slots)
            if s.is_master and s.slots and s.settled and s.port in by_port
        ]

    def replicas_of(self, master: EmbeddedServer) -> list[EmbeddedServer]:
        """The running replicas of ``master`` now."""
        states, by_port = self._view()
        ids = {s.port: s.node_id for s in states}
        master_id = ids.get(master.port or 0)
        return [
            by_port[s.port]
            for s in states
            if s.master_id == master_id and s.settled and by_port[s.port].running
        ]

    def master_of(self, key_or_slot: str | bytes | int) -> EmbeddedServer:
        """The master that serves ``key_or_slot`` (a key, or a slot number) now."""
        slot = _slot(key_or_slot)
        states, by_port = self._view()
        for state in states:
            if state.is_master and state.owns(slot) and state.port in by_port:
                return by_port[state.port]
        raise EmbeddedServerError(f"no master serves slot {slot}")

    def _stable(self) -> bool:
        """All running nodes report ``cluster_state:ok``, agree on who is master or replica
        of whom and who owns which slots, and every replica's link is up."""
        live = running(self.nodes)
        ports = {node.port for node in live}
        maps = set()
        for node in live:
            with _admin(node) as client:
                fields = info_fields(client.execute_command("CLUSTER", "INFO"))
                if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                    return False
                states = cluster_nodes(client)
                ids = {s.node_id: s.port for s in states}
                seen = frozenset(
                    (s.port, s.is_master, ids.get(s.master_id or ""), s.slots)
                    for s in states
                    if s.port in ports and s.settled
                )
                if {entry[0] for entry in seen} != ports:
                    return False
                myself = next(s for s in states if "myself" in s.flags)
                if not myself.is_master and not replication_up(client):
                    return False
            maps.add(seen)
        return len(maps) == 1

    def wait_stable(self, timeout: float = 30.0) -> float:
        """Wait until the cluster agrees on one map and every replica is in sync (see
        `start`); returns the seconds waited. Raises `TimeoutError` after ``timeout``."""
        return wait_until(self._stable, timeout, self._unformed)

    # --- faults (for tests) ----------------------------------------------------------------

    def failover(self, master: EmbeddedServer | None = None, *, timeout: float = 30.0) -> Promotion:
        """Fail ``master`` (default: the first master) over gracefully to one of its replicas.

        ``CLUSTER FAILOVER`` on the replica: the master stops accepting writes, the replica
        catches up, takes over the slots, and the old master becomes its replica. Returns once
        the cluster agrees on the new map (`wait_stable`).
        """
        old = master or self.masters()[0]
        replica = self._replicas_of_or_fail(old)[0]
        started = time.monotonic()
        with _admin(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        return self._promotion(old, [replica], started, timeout)

    def kill_master(
        self, master: EmbeddedServer | None = None, *, timeout: float = 30.0
    ) -> Promotion:
        """SIGKILL ``master`` (default: the first master) and wait for a replica's promotion.

        The other nodes notice its silence after ``cluster-node-timeout``, a replica wins the
        election and takes over the slots. `restart_node` brings the killed node back.
        """
        old = master or self.masters()[0]
        replicas = self._replicas_of_or_fail(old)
        started = time.monotonic()
        old.kill()
        return self._promotion(old, replicas, started, timeout)

    def _replicas_of_or_fail(self, master: EmbeddedServer) -> list[EmbeddedServer]:
        replicas = self.replicas_of(master)
        if not replicas:
            raise EmbeddedServerError(
                f"{master!r} has no running replica: start the cluster with replicas=1 or more"
            )
        return replicas

    def _promotion(
        self,
        old: EmbeddedServer,
        candidates: list[EmbeddedServer],
        started: float,
        timeout: float,
    ) -> Promotion:
        promoted: list[EmbeddedServer] = []

        def one_is_master() -> bool:
            for candidate in candidates:
                with _admin(candidate) as client:
                    if client.info("replication").get("role") == "master":
                        promoted[:] = [candidate]
                        return True
            return False

        wait_until(one_is_master, timeout, f"no replica of {old!r} was promoted")
        promoted_after = time.monotonic() - started
        wait_until(self._stable, max(0.0, started + timeout - time.monotonic()), self._unformed)
        return Promotion(old, promoted[0], started, promoted_after, time.monotonic() - started)

    def restart_node(self, node: EmbeddedServer, *, timeout: float = 30.0) -> float:
        """Start a stopped or killed node again on its port, with its ``nodes.conf``.

        A master that was failed over while it was down rejoins as a replica of its successor.
        Returns the seconds until the cluster was stable again (its first sync included).
        """
        started = time.monotonic()
        node.restart()
        wait_until(self._stable, timeout, self._unformed)
        return time.monotonic() - started

    def move_slots(
        self,
        first: int,
        last: int,
        target: EmbeddedServer,
        *,
        batch: int = 100,
        pause: float = 0.0,
        timeout: float = 30.0,
    ) -> int:
        """Move slots ``first``..``last`` to the master ``target`` while clients keep running.

        Per slot, as ``redis-cli --cluster reshard``: ``SETSLOT IMPORTING`` on the target,
        ``SETSLOT MIGRATING`` on the owner, ``GETKEYSINSLOT`` + ``MIGRATE`` ``batch`` keys at a
        time (sleeping ``pause`` s in between, so that clients interleave and meet ``ASK``),
        then ``SETSLOT NODE`` on the target, the old owner and the other masters. Returns how
        many keys moved, once every node agrees on the new map.
        """
        if not 0 <= first <= last < 16384:
            raise ConfigurationError(f"need 0 <= first <= last < 16384, got {first}..{last}")
        states, by_port = self._view()
        target_id = self.node_id(target)
        owners = {s.port: s for s in states if s.is_master and s.slots and s.settled}
        clients = {port: _admin(by_port[port]) for port in owners if by_port[port].running}
        moved = 0
        try:
            if target.port not in clients:
                raise EmbeddedServerError(f"{target!r} is not a running master")
            destination = clients[target.port]
            for slot in range(first, last + 1):
                owner = next((s for s in owners.values() if s.owns(slot)), None)
                if owner is None or owner.port == target.port:
                    continue
                source = clients[owner.port]
                destination.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner.node_id)
                source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
                while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                    source.execute_command(
                        "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
                    )
                    moved += len(keys)
                    if pause:
                        time.sleep(pause)
                # The target first: once the source lets go, the target must already own it.
                order = [destination, source]
                order += [c for port, c in clients.items() if port not in (target.port, owner.port)]
                for client in order:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            for client in clients.values():
                client.close()
        wait_until(self._stable, timeout, self._unformed)
        return moved

    # --- clients ---------------------------------------------------------------------------

    @overload
    def client(
        self, *, asyncio: Literal[False] = False, **kwargs: Any
    ) -> redis.cluster.RedisCluster: ...

    @overload
    def client(
        self, *, asyncio: Literal[True], **kwargs: Any
    ) -> redis.asyncio.cluster.RedisCluster: ...

    def client(
        self, *, asyncio: bool = False, **kwargs: Any
    ) -> redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster:
        """A new cluster client (``asyncio=True`` for ``redis.asyncio.cluster``).

        Configured like `connect`'s clients unless ``kwargs`` say otherwise: redis-py's cluster
        client re-sends a command after a connection error, a timeout or ``CLUSTERDOWN`` (up to
        10 times in redis-py 8), which would apply a lost-reply increment twice; this one does
        not, and its socket timeouts are finite. Its startup nodes are the running nodes, so a
        client made while a node is down still finds the cluster.

        Raises:
            EmbeddedServerError: the cluster is not running (use ``with`` or `start` first).
        """
        live = running(self.nodes)
        if not live or not all(node.port for node in self.nodes):
            raise EmbeddedServerError(
                "the cluster is not running: use `with EmbeddedCluster(...) as cluster:` or "
                "call cluster.start() first"
            )
        startup = [("127.0.0.1", node.port or 0) for node in live]
        options = safe_options(dict(kwargs), asyncio=asyncio, cluster=True)
        if asyncio:
            nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in startup]
            return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options)
        sync_nodes = [redis.cluster.ClusterNode(h, p) for h, p in startup]
        return redis.cluster.RedisCluster(startup_nodes=sync_nodes, **options)


def _admin(node: EmbeddedServer) -> redis.Redis:
    """A short-lived client for one node's admin commands: bounded, never re-sending."""
    return node.client(socket_timeout=5.0, retry=Retry(NoBackoff(), 0))


def _slot(key_or_slot: str | bytes | int) -> int:
    if isinstance(key_or_slot, int) and not isinstance(key_or_slot, bool):
        if not 0 <= key_or_slot < 16384:
            raise ConfigurationError(f"a slot is 0..16383, got {key_or_slot}")
        return key_or_slot
    if isinstance(key_or_slot, str):
        return int(key_slot(key_or_slot.encode()))
    if isinstance(key_or_slot, bytes):
        return int(key_slot(key_or_slot))
    raise TypeError(f"expected a key or a slot number, got {type(key_or_slot).__name__}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
