"""`SentinelTopology`: a primary, a replica and three Sentinels, all real local processes.

Every process is an `EmbeddedServer`; a Sentinel is the same ``valkey-server`` binary started
with a config file and ``--sentinel`` (`SentinelServer`). Timeouts are small (a primary is
"down" after 1 s of silence) so a failover completes within a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import redis
import redis.sentinel

from .._server import EmbeddedServer

__all__ = ["SentinelServer", "SentinelTopology"]


class SentinelServer(EmbeddedServer):
    """A Sentinel process watching ``service`` at ``primary_port`` (quorum ``quorum``).

    Sentinel rewrites its config file, so the file lives in the server's own directory; the
    other options (port, logfile, ...) are passed on the command line as for any server.
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
    ) -> None:
        super().__init__(binary)
        self.service = service
        self.sentinel_config = self.dir / "sentinel.conf"
        ms = int(down_after * 1000)
        self.sentinel_config.write_text(
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {ms}\n"
            f"sentinel failover-timeout {service} {int(failover_timeout * 1000)}\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    def _command_line(self) -> list[str]:
        args = super()._command_line()
        # valkey-server <config file> --sentinel --port ...: the file must come first.
        return [args[0], str(self.sentinel_config), "--sentinel", *args[1:]]


class SentinelTopology:
    """A primary + one replica + three Sentinels on loopback, started and stopped together.

    Use it as a context manager (or the ``sentinel`` pytest fixture). `start` returns once the
    replica is in sync and every Sentinel knows the replica and the other two Sentinels, so a
    failover can start at once.

    Args:
        service: the name the Sentinels monitor the primary under.
        down_after: seconds of silence before a Sentinel considers the primary down.
        failover_timeout: Sentinel's ``failover-timeout``, in seconds.
        config: extra directives for the primary and the replica.
    """

    def __init__(
        self,
        service: str = "mymaster",
        *,
        down_after: float = 1.0,
        failover_timeout: float = 10.0,
        config: Mapping[str, str | int] | None = None,
    ) -> None:
        self.service = service
        self._down_after = down_after
        self._failover_timeout = failover_timeout
        self.primary = EmbeddedServer(config=config)
        self.replica = EmbeddedServer(config=config)
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
    def data_servers(self) -> list[EmbeddedServer]:
        """The primary and the replica as started (their roles swap after a failover)."""
        return [self.primary, self.replica]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels if s.port is not None]

    def start(self, timeout: float = 30.0) -> SentinelTopology:
        try:
            self.primary.start()
            self.replica.start()
            with self.replica.client() as replica:
                replica.execute_command("REPLICAOF", "127.0.0.1", self.primary.port)
            assert self.primary.port is not None
            self.sentinels = [
                SentinelServer(
                    self.primary.port,
                    service=self.service,
                    down_after=self._down_after,
                    failover_timeout=self._failover_timeout,
                )
                for _ in range(3)
            ]
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait(self._converged, timeout, "the Sentinel topology did not converge")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()
            server.cleanup()

    def _converged(self) -> bool:
        with self.primary.client(socket_timeout=2) as primary:
            info = primary.info("replication")
        if int(info.get("connected_slaves", 0)) < 1:
            return False
        if info.get("slave0", {}).get("state") != "online":
            return False
        for sentinel in self.sentinels:
            with sentinel.client(socket_timeout=2) as client:
                state = client.execute_command("SENTINEL MASTER", self.service)
                fields = _fields(state)
                if int(fields.get("num-slaves", 0)) < 1:
                    return False
                if int(fields.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                    return False
        return True

    @staticmethod
    def _wait(condition: Any, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError):
                pass  # a process between states: ask again
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.1)

    # --- observing and driving failovers ----------------------------------------------------

    def primary_address(self, sentinel_index: int = 0) -> tuple[str, int]:
        """Where Sentinel ``sentinel_index`` says the primary is now."""
        with self.sentinels[sentinel_index].client(socket_timeout=2) as client:
            host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        return (_text(host), int(port))

    def server_at(self, address: tuple[str, int]) -> EmbeddedServer:
        """The `EmbeddedServer` (primary or replica as started) listening at ``address``."""
        for server in self.data_servers:
            if server.port == address[1]:
                return server
        raise LookupError(f"no data server at {address}")

    def failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """``SENTINEL FAILOVER`` and wait until all Sentinels agree on the new primary.

        Returns the new primary's address. Bounded by ``timeout`` (raises `TimeoutError`).
        """
        old = self.primary_address()
        with self.sentinels[0].client(socket_timeout=5) as client:
            client.execute_command("SENTINEL FAILOVER", self.service)
        return self.wait_for_new_primary(old, timeout)

    def wait_for_new_primary(self, old: tuple[str, int], timeout: float = 30.0) -> tuple[str, int]:
        """Wait until every Sentinel names a primary other than ``old`` that says it is one."""
        found: list[tuple[str, int]] = []

        def moved() -> bool:
            addresses = {self.primary_address(i) for i in range(len(self.sentinels))}
            if len(addresses) != 1 or old in addresses:
                return False
            (address,) = addresses
            with redis.Redis(*address, socket_timeout=2) as client:
                if client.info("replication").get("role") != "master":
                    return False
            found[:] = [address]
            return True

        self._wait(moved, timeout, f"the Sentinels did not agree on a primary other than {old}")
        return found[0]

    def client(self, **kwargs: Any) -> redis.sentinel.Sentinel:
        """A redis-py `Sentinel` over the three Sentinels (use ``.master_for(service)``)."""
        kwargs.setdefault("socket_timeout", 2.0)
        return redis.sentinel.Sentinel(self.sentinel_addresses, **kwargs)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(reply: Any) -> dict[str, str]:
    """A ``SENTINEL MASTER`` reply (a flat list, or a dict once parsed) as a str dict."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(v) for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))
