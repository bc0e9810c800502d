"""A loopback TCP proxy for fault tests: forward, blackhole (half-open) or reset connections."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; `blackhole` silently drops traffic both ways
    (sockets stay open: a half-open link), `reset` closes every link with an RST."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._blackhole = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy")
        self._thread.start()

    def blackhole(self, on: bool = True) -> None:
        if on:
            self._blackhole.set()
        else:
            self._blackhole.clear()

    def reset(self) -> None:
        """Abort every proxied link with an RST (SO_LINGER 0), both sides."""
        with self._lock:
            sockets = list(self._pairs)
            self._pairs.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.reset()
        self._listener.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ)
        registered: set[socket.socket] = set()
        while not self._stop.is_set():
            with self._lock:
                live = set(self._pairs)
            for sock in registered - live:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
                registered.discard(sock)
            for sock in live - registered:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    selector.register(sock, selectors.EVENT_READ)
                    registered.add(sock)
            for key, _ in selector.select(timeout=0.02):
                if key.fileobj is self._listener:
                    self._accept()
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    peer = self._pairs.get(conn)
                if peer is None:
                    continue
                if not data:
                    self._drop(conn, peer)
                elif not self._blackhole.is_set():
                    with contextlib.suppress(OSError):
                        peer.sendall(data)
        selector.close()

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._pairs[client] = upstream
                self._pairs[upstream] = client

    def _drop(self, sock: socket.socket, peer: socket.socket) -> None:
        with self._lock:
            self._pairs.pop(sock, None)
            self._pairs.pop(peer, None)
        for s in (sock, peer):
            with contextlib.suppress(OSError):
                s.close()
