"""Count exactly which commands a block of code sent to the server(s), through ``MONITOR``.

Only top-level commands count: what a script runs inside the server (``[0 lua]`` lines) is not
a round trip. A unique ``ECHO`` marker sent at the end tells when every node's monitor stream
has caught up, so the count is exact rather than timed.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import redis

__all__ = ["CommandCounter", "MonitoredCommand"]

_LINE = re.compile(r"^[\d.]+ \[\d+ (?P<client>[^\]]+)\] (?P<args>.*)$", re.S)
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
# Commands a fresh redis-py connection sends while connecting: not part of an operation.
HANDSHAKE = frozenset({"HELLO", "AUTH", "CLIENT", "SELECT", "READONLY"})


@dataclass(frozen=True, slots=True)
class MonitoredCommand:
    """One command as the server saw it: which node, which client address, its arguments."""

    node: str
    client: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.args[0].upper() if self.args else ""


class _NodeMonitor:
    def __init__(self, host: str, port: int, marker: str) -> None:
        self.node = f"{host}:{port}"
        self.marker = marker
        self.lines: list[MonitoredCommand] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._conn = redis.Connection(host=host, port=port, socket_timeout=30)
        self._conn.connect()
        self._conn.send_command("MONITOR")
        self._conn.read_response()
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"monitor-{port}")
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self._conn.read_response()
                text = line.decode(errors="replace") if isinstance(line, bytes) else str(line)
                match = _LINE.match(text)
                if not match:
                    continue
                args = tuple(_ARG.findall(match["args"]))
                if args[:2] == ("ECHO", self.marker) or args[:2] == ("echo", self.marker):
                    return
                self.lines.append(MonitoredCommand(self.node, match["client"], args))
        except BaseException as exc:  # surfaced by CommandCounter.__exit__
            self.error = exc
        finally:
            self.done.set()

    def finish(self, timeout: float) -> None:
        host, port = self.node.rsplit(":", 1)
        with redis.Redis(host=host, port=int(port)) as client:
            client.echo(self.marker)
        finished = self.done.wait(timeout)
        self._conn.disconnect()
        if not finished:
            raise TimeoutError(f"the MONITOR stream of {self.node} did not catch up")
        if self.error is not None:
            raise self.error


class CommandCounter:
    """Context manager that records the top-level commands sent to ``nodes`` inside its block.

    >>> with CommandCounter([("127.0.0.1", 6379)]) as seen:
    ...     lock.acquire()
    >>> seen.names
    ['EVALSHA']

    Handshake commands a brand-new connection sends (``HELLO``, ``CLIENT SETINFO``, ...) are
    left out of `names` and `count` (they are in `all`); create clients with
    ``driver_info=None`` (redis-py 8) to avoid them altogether. Commands from other clients
    of the same servers are counted too: give the block the servers to itself.
    """

    def __init__(self, nodes: Iterable[tuple[str, int]], *, timeout: float = 10.0) -> None:
        self.nodes = list(nodes)
        self.timeout = timeout
        self.all: list[MonitoredCommand] = []
        self._monitors: list[_NodeMonitor] = []

    def __enter__(self) -> CommandCounter:
        marker = f"redis-patterns-counter-{uuid.uuid4().hex}"
        self._monitors = [_NodeMonitor(host, port, marker) for host, port in self.nodes]
        self.all = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for monitor in self._monitors:
            monitor.finish(self.timeout)
            self.all.extend(monitor.lines)

    @property
    def commands(self) -> list[MonitoredCommand]:
        """The commands that count: neither connection handshakes nor what scripts ran inside."""
        return [c for c in self.all if c.name not in HANDSHAKE and c.client != "lua"]

    @property
    def inside_scripts(self) -> list[MonitoredCommand]:
        """What scripts ran inside the server (not round trips; for inspection)."""
        return [c for c in self.all if c.client == "lua"]

    @property
    def names(self) -> list[str]:
        """The counted commands' names, upper-case, in order per node."""
        return [c.name for c in self.commands]

    @property
    def count(self) -> int:
        """How many commands were sent (round trips, for non-pipelined code)."""
        return len(self.commands)
