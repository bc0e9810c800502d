"""``redis-patterns server``: the embedded server in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading

from .._embedded import EmbeddedServer
from .._errors import EmbeddedServerError


def _cause(message: str) -> str:
    """The most telling line of a start-up failure (the log's own error, when it has one)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for marker in ("already in use", "# ", "FATAL", "Bad directive", "Error"):
        for line in reversed(lines):
            if marker in line:
                return line.split("# ", 1)[-1] if marker == "# " else line
    return lines[0] if lines else message


def run_server(*, port: int | None, binary: str | None, appendonly: bool) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server = EmbeddedServer(binary, port=port, appendonly=appendonly).start()
    except EmbeddedServerError as exc:
        cause = _cause(str(exc))
        print(f"redis-patterns server: could not start the server: {cause}", file=sys.stderr)
        return 1
    with server:
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
