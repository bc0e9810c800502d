"""Stops the servers a process started when that process dies, even by SIGKILL.

One small watcher process per parent reads pids from a pipe; when the pipe closes (the parent
exited, however it exited) it terminates every pid still registered. ``PR_SET_PDEATHSIG`` is not
enough: it fires when the *thread* that started the child ends, not the process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading

__all__ = ["forget", "watch"]

_WATCHER = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("+"):
        pids.add(int(line[1:]))
    elif line.startswith("-"):
        pids.discard(int(line[1:]))
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
for pid in pids:
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
deadline = time.monotonic() + 3
while any(alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""

_lock = threading.Lock()
_watcher: subprocess.Popen[bytes] | None = None
_watcher_owner = 0


def _send(line: str) -> None:
    global _watcher, _watcher_owner
    with _lock:
        if _watcher is None or _watcher_owner != os.getpid() or _watcher.poll() is not None:
            # A forked child must not share its parent's watcher: start its own.
            _watcher = subprocess.Popen(
                [sys.executable, "-c", _WATCHER],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
            _watcher_owner = os.getpid()
        assert _watcher.stdin is not None
        try:
            _watcher.stdin.write(line.encode() + b"\n")
            _watcher.stdin.flush()
        except BrokenPipeError:
            _watcher = None


def watch(pid: int) -> None:
    """Terminate ``pid`` when this process dies."""
    _send(f"+{pid}")


def forget(pid: int) -> None:
    """``pid`` was stopped normally; stop watching it."""
    if _watcher is not None and _watcher_owner == os.getpid():
        _send(f"-{pid}")


def _after_fork_in_child() -> None:
    # The child must not hold the parent's pipe open, or the parent's death would go unseen.
    global _watcher
    if _watcher is not None and _watcher.stdin is not None:
        with contextlib.suppress(OSError):
            _watcher.stdin.close()
    _watcher = None


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_watcher() -> None:
    # A normal exit: the servers were stopped already; let the watcher see EOF and end now,
    # rather than leave a running Popen behind for the garbage collector to warn about.
    watcher = _watcher
    if watcher is not None and _watcher_owner == os.getpid() and watcher.stdin is not None:
        with contextlib.suppress(OSError):
            watcher.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watcher.wait(5)
