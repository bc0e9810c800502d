"""A small loopback TCP proxy for fault tests: drops replies or resets connections on demand."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream>``, one thread pair per connection.

    ``drop_every=n``: every n-th reply chunk from the server is not delivered; the client's
    connection is shut down instead (the server ran the command, the client sees an error: an
    *outcome unknown* reply loss). ``reset_every=n``: every n-th request chunk from the client is
    answered with a TCP RST before it reaches the server.
    """

    def __init__(self, upstream: int, *, drop_every: int = 0, reset_every: int = 0) -> None:
        self.upstream = upstream
        self.drop_every = drop_every
        self.reset_every = reset_every
        self.replies = 0
        self.requests = 0
        self.dropped = 0
        self.resets = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._sockets += [client, server]
            for target in (self._requests, self._replies):
                threading.Thread(target=target, args=(client, server), daemon=True).start()

    def _kill(self, client: socket.socket, server: socket.socket, *, rst: bool) -> None:
        if rst:  # SO_LINGER 0: close sends RST instead of FIN
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in (client, server):
            # shutdown first: close alone is deferred while the other thread sits in recv (the
            # RST case runs on the thread reading the client, so its close takes effect)
            if not rst or sock is server:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                self._kill(client, server, rst=False)
                return
            with self._lock:
                self.requests += 1
                reset = self.reset_every and self.requests % self.reset_every == 0
                if reset:
                    self.resets += 1
            if reset:
                self._kill(client, server, rst=True)
                return
            try:
                server.sendall(data)
            except OSError:
                return

    def _replies(self, client: socket.socket, server: socket.socket) -> None:
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                return
            if not data:
                self._kill(client, server, rst=False)
                return
            with self._lock:
                self.replies += 1
                drop = self.drop_every and self.replies % self.drop_every == 0
                if drop:
                    self.dropped += 1
            if drop:
                self._kill(client, server, rst=False)
                return
            try:
                client.sendall(data)
            except OSError:
                return
