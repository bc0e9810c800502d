"""``redis-patterns server``: the embedded server in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import threading

from .._server import EmbeddedServer


def run_server(*, port: int | None, binary: str | None, appendonly: bool) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedServer(binary, port=port, appendonly=appendonly) as server:
        print(f"{server.binary.name} is listening at {server.url} (pid {server.pid})", flush=True)
        print(f"export REDIS_URL={server.url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                if not server.running:
                    print("the server exited:\n" + server.log_tail(), flush=True)
                    return 1
        except KeyboardInterrupt:
            pass
        print("stopping...", flush=True)
    return 0
