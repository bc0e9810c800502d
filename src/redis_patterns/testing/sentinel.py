"""`SentinelTopology`: a primary, its replicas and three Sentinels, all real local processes.

Every process is an `EmbeddedServer`; a Sentinel is the same server binary (``valkey-server``,
or Redis 7's ``redis-server``) started with a config file and ``--sentinel`` (`SentinelServer`).
Timeouts are small (a primary is "down" after 1 s of silence) so a failover completes within a
few seconds.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._embedded import EmbeddedServer, _free_port, _stop_together
from .._errors import ConfigurationError, EmbeddedServerError
from .._topology import Promotion, info_fields, replication_up, running, wait_until

__all__ = ["SentinelServer", "SentinelTopology"]

_START_ATTEMPTS = 5


class SentinelServer(EmbeddedServer):
    """A Sentinel process watching ``service`` at ``primary_port`` (quorum ``quorum``).

    Sentinel rewrites its config file, so the file lives in the server's own directory; the
    other options (port, logfile, ...) are passed on the command line as for any server.
    ``myid``, ``known_sentinels`` (``(port, myid)`` pairs) and ``known_replicas`` (ports) are
    written into the file, as Sentinel itself records what it has discovered: a topology whose
    Sentinels are told about each other up front is ready at once, instead of after the
    hello messages they exchange every 2 s.
    """

    def __init__(
        self,
        primary_port: int,
        *,
        service: str = "mymaster",
        quorum: int = 2,
        down_after: float = 1.0,
        failover_timeout: float = 10.0,
        binary: str | None = None,
        port: int | None = None,
        myid: str | None = None,
        known_sentinels: Sequence[tuple[int, str]] = (),
        known_replicas: Sequence[int] = (),
    ) -> None:
        super().__init__(binary, port=port)
        self.service = service
        self.myid = myid or secrets.token_hex(20)
        self.sentinel_config = self.dir / "sentinel.conf"
        ms = int(down_after * 1000)
        lines = [
            f"sentinel myid {self.myid}",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {ms}",
            f"sentinel failover-timeout {service} {int(failover_timeout * 1000)}",
            f"sentinel parallel-syncs {service} 1",
            *(f"sentinel known-replica {service} 127.0.0.1 {p}" for p in known_replicas),
            *(f"sentinel known-sentinel {service} 127.0.0.1 {p} {i}" for p, i in known_sentinels),
        ]
        self.sentinel_config.write_text("\n".join(lines) + "\n")

    def _command_line(self) -> list[str]:
        args = super()._command_line()
        # valkey-server <config file> --sentinel --port ...: the file must come first.
        return [args[0], str(self.sentinel_config), "--sentinel", *args[1:]]


class SentinelTopology:
    """A primary + ``replicas`` replicas + three Sentinels on loopback, started and stopped
    together.

    Use it as a context manager (or the ``sentinel`` pytest fixture). `start` returns once every
    replica has finished its first sync and every Sentinel knows every replica and the other two
    Sentinels, so a failover can start at once.

    Args:
        service: the name the Sentinels monitor the primary under; by default a unique one,
            so that the Sentinels of another topology on this machine, whose dead primary's
            port one of this topology's servers happens to reuse, never take this one's
            announcements for theirs (Sentinels adopt any newer configuration announced
            under their service's name).
        replicas: how many replicas the primary has (>= 1).
        binary: as for `EmbeddedServer`, for every process (``"redis-server"`` for Redis 7,
            whose server binary also runs Sentinel).
        down_after: seconds of silence before a Sentinel considers the primary down.
        failover_timeout: Sentinel's ``failover-timeout``, in seconds.
        config: extra directives for the primary and the replicas.
    """

    def __init__(
        self,
        service: str | None = None,
        *,
        replicas: int = 2,
        binary: str | None = None,
        down_after: float = 1.0,
        failover_timeout: float = 10.0,
        config: Mapping[str, str | int] | None = None,
    ) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ConfigurationError(f"replicas must be an int >= 1, got {replicas!r}")
        self.service = service or f"primary-{secrets.token_hex(4)}"
        self._binary = binary
        self._down_after = down_after
        self._failover_timeout = failover_timeout
        # A replica's first sync starts at once (diskless sync would wait 5 s by default).
        options: dict[str, str | int] = {"repl-diskless-sync-delay": 0, **(config or {})}
        self.primary = EmbeddedServer(binary, config=options)
        self.replicas = [EmbeddedServer(binary, config=options) for _ in range(replicas)]
        self.sentinels: list[SentinelServer] = []

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def replica(self) -> EmbeddedServer:
        """The first replica as started."""
        return self.replicas[0]

    @property
    def data_servers(self) -> list[EmbeddedServer]:
        """The primary and the replicas as started (their roles swap after a failover)."""
        return [self.primary, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels if s.port is not None]

    def start(self, timeout: float = 30.0) -> SentinelTopology:
        try:
            self.primary.start()
            for replica in self.replicas:
                replica.start()
                with _admin(replica) as client:
                    client.execute_command("REPLICAOF", "127.0.0.1", self.primary.port)
            self._start_sentinels()
            wait_until(self._converged, timeout, "the Sentinel topology did not converge")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinels(self) -> None:
        assert self.primary.port is not None
        replica_ports = [r.port or 0 for r in self.replicas]
        for attempt in range(_START_ATTEMPTS):
            # Ports are chosen before start so that each Sentinel's file can name the others;
            # one taken meanwhile by another process makes us start the three again elsewhere.
            ports = _distinct_ports(3)
            ids = [secrets.token_hex(20) for _ in ports]
            self.sentinels = [
                SentinelServer(
                    self.primary.port,
                    service=self.service,
                    down_after=self._down_after,
                    failover_timeout=self._failover_timeout,
                    binary=self._binary,
                    port=port,
                    myid=myid,
                    known_sentinels=[(p, i) for p, i in zip(ports, ids, strict=True) if p != port],
                    known_replicas=replica_ports,
                )
                for port, myid in zip(ports, ids, strict=True)
            ]
            try:
                for sentinel in self.sentinels:
                    sentinel.start()
                return
            except EmbeddedServerError as exc:
                for sentinel in self.sentinels:
                    sentinel.stop()
                    sentinel.cleanup()
                if "already in use" not in str(exc) or attempt == _START_ATTEMPTS - 1:
                    raise

    def stop(self) -> None:
        # The Sentinels first: none may start a failover while the data servers go down.
        _stop_together(list(self.sentinels))
        _stop_together([*self.replicas, self.primary])

    def _converged(self) -> bool:
        return self._following(self.primary, self.replicas) and self._sentinels_agree(self.primary)

    def _sentinels_agree(self, primary: EmbeddedServer) -> bool:
        """Every Sentinel names ``primary``, knows the other Sentinels and every replica."""
        address = ("127.0.0.1", primary.port)
        expected = {s.port for s in running(self.data_servers)} - {primary.port}
        for index, sentinel in enumerate(self.sentinels):
            if self.primary_address(index) != address:
                return False
            with _admin(sentinel) as client:
                fields = _fields(client.execute_command("SENTINEL", "MASTER", self.service))
                if int(fields.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                    return False
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
                known = {
                    int(f["port"])
                    for f in map(_fields, replicas)
                    if not {"s_down", "disconnected"} & set(f.get("flags", "").split(","))
                }
                if not expected <= known:
                    return False
        return True

    @staticmethod
    def _following(primary: EmbeddedServer, replicas: Sequence[EmbeddedServer]) -> bool:
        """Every running server of ``replicas`` replicates from ``primary``, its link up."""
        for replica in running(replicas):
            with _admin(replica) as client:
                info = client.info("replication")
                if int(info.get("master_port", 0)) != primary.port or not replication_up(client):
                    return False
        return True

    # --- observing and driving failovers ----------------------------------------------------

    def primary_address(self, sentinel_index: int = 0) -> tuple[str, int]:
        """Where Sentinel ``sentinel_index`` says the primary is now."""
        with _admin(self.sentinels[sentinel_index]) as client:
            host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        return (_text(host), int(port))

    def server_at(self, address: tuple[str, int]) -> EmbeddedServer:
        """The `EmbeddedServer` (primary or replica as started) listening at ``address``."""
        for server in self.data_servers:
            if server.port == address[1]:
                return server
        raise LookupError(f"no data server at {address}")

    def current_primary(self) -> EmbeddedServer:
        """The server Sentinel 0 names as the primary now."""
        return self.server_at(self.primary_address())

    def failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """``SENTINEL FAILOVER``; wait until all Sentinels agree on the new primary and the
        other replicas replicate from it.

        Returns the new primary's address. The old primary is *not* waited for: Sentinel
        demotes it only when it next inspects it, up to ~10 s later, and until then it accepts
        writes from connections opened before (`wait_following` waits for it too).
        Bounded by ``timeout`` (raises `TimeoutError`).
        """
        return self.failover_promotion(timeout).address

    def failover_promotion(self, timeout: float = 30.0) -> Promotion:
        """`failover`, returning the `Promotion` (old, new, and how long each step took)."""
        old = self.current_primary()
        started = time.monotonic()
        with _admin(self.sentinels[0]) as client:
            client.execute_command("SENTINEL FAILOVER", self.service)
        return self._promotion(old, started, timeout)

    def kill_primary(self, timeout: float = 30.0) -> Promotion:
        """SIGKILL the primary and wait until the Sentinels have promoted a replica and the
        other replicas follow it; the killed server stays down (`restart_as_replica`)."""
        old = self.current_primary()
        started = time.monotonic()
        old.kill()
        return self._promotion(old, started, timeout)

    def _promotion(self, old: EmbeddedServer, started: float, timeout: float) -> Promotion:
        new = self.server_at(self.wait_for_new_primary(("127.0.0.1", old.port or 0), timeout))
        promoted_after = time.monotonic() - started
        others = [s for s in self.data_servers if s is not old and s is not new]
        wait_until(
            lambda: self._following(new, others) and self._sentinels_agree(new),
            max(0.0, started + timeout - time.monotonic()),
            f"the replicas did not follow the new primary {new!r}",
        )
        return Promotion(old, new, started, promoted_after, time.monotonic() - started)

    def wait_for_new_primary(self, old: tuple[str, int], timeout: float = 30.0) -> tuple[str, int]:
        """Wait until every Sentinel names a primary other than ``old`` that says it is one."""
        found: list[tuple[str, int]] = []

        def moved() -> bool:
            addresses = {self.primary_address(i) for i in range(len(self.sentinels))}
            if len(addresses) != 1 or old in addresses:
                return False
            (address,) = addresses
            with redis.Redis(*address, socket_timeout=2, retry=Retry(NoBackoff(), 0)) as client:
                if client.info("replication").get("role") != "master":
                    return False
            found[:] = [address]
            return True

        wait_until(moved, timeout, f"the Sentinels did not agree on a primary other than {old}")
        return found[0]

    def wait_following(self, timeout: float = 30.0) -> float:
        """Wait until every running data server but the primary replicates from it (the old
        primary of a graceful failover included) and the Sentinels agree; returns seconds."""
        return wait_until(self._all_follow, timeout, "not every server follows the primary")

    def _all_follow(self) -> bool:
        primary = self.current_primary()  # asked anew: a failover may happen meanwhile
        others = [s for s in self.data_servers if s is not primary]
        return self._following(primary, others) and self._sentinels_agree(primary)

    def restart_as_replica(self, server: EmbeddedServer, timeout: float = 30.0) -> float:
        """Start a killed data server again, as a replica of the current primary; returns the
        seconds until it is in sync and every Sentinel lists it.

        Without this it would come back as an empty primary until Sentinel demoted it.
        """
        started = time.monotonic()
        server.restart()
        with _admin(server) as client:
            client.execute_command("REPLICAOF", "127.0.0.1", self.current_primary().port)
        wait_until(self._all_follow, timeout, f"{server!r} did not rejoin as a replica")
        return time.monotonic() - started

    def client(self, **kwargs: Any) -> redis.sentinel.Sentinel:
        """A redis-py `Sentinel` over the three Sentinels (use ``.master_for(service)``)."""
        kwargs.setdefault("socket_timeout", 2.0)
        return redis.sentinel.Sentinel(self.sentinel_addresses, **kwargs)


def _admin(server: EmbeddedServer) -> redis.Redis:
    return server.client(socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(reply: Any) -> dict[str, str]:
    """A ``SENTINEL MASTER`` / ``REPLICAS`` entry (a flat list, or a dict once parsed)."""
    if isinstance(reply, Mapping):
        return info_fields(reply)
    items = [_text(v) for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))
