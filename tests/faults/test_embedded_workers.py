"""`connect()` without ``REDIS_URL`` in one of several workers says so, once (issue 13, item 8).

Each worker process would start its own embedded server, so limits and sessions would not be
shared. Real processes: a plain script, an ``os.fork`` child, a ``multiprocessing`` spawn child
(how uvicorn and hypercorn start ``--workers``), and a process that has gunicorn's arbiter loaded
(stood in for by an empty module: gunicorn is not a dependency).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fault

SCRIPT = r"""
import logging, multiprocessing, os, sys, types

logging.basicConfig(level=logging.WARNING, format="%(process)d|%(name)s|%(message)s")


def use():
    import redis_patterns

    for _ in range(3):  # several connects, one embedded server, at most one warning
        with redis_patterns.connect() as client:
            assert client.ping()
    sys.stderr.flush()


if __name__ == "__main__":
    mode = sys.argv[1]
    import redis_patterns  # imported before any fork, as a preloading server would

    print(os.getpid(), flush=True)
    if mode == "plain":
        use()
    elif mode == "fork":
        pid = os.fork()
        if pid == 0:
            use()
            os._exit(0)  # the child's own reaper stops its server
        print(pid, flush=True)
        assert os.waitpid(pid, 0)[1] == 0
        use()  # the parent is no worker: it starts its own server silently
    elif mode == "spawn":
        child = multiprocessing.get_context("spawn").Process(target=use)
        child.start()
        print(child.pid, flush=True)
        child.join()
        assert child.exitcode == 0
    elif mode == "gunicorn":
        sys.modules["gunicorn.arbiter"] = types.ModuleType("gunicorn.arbiter")
        use()
"""


def _run(tmp_path: Path, mode: str) -> tuple[list[int], list[str]]:
    """(pids the script printed, the log lines warning about REDIS_URL as ``pid|message``)."""
    script = tmp_path / "workers.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pids = [int(line) for line in result.stdout.split()]
    warnings = []
    for line in result.stderr.splitlines():
        pid, _, rest = line.partition("|")
        logger, _, message = rest.partition("|")
        if "REDIS_URL" in message:
            assert logger == "redis_patterns"
            warnings.append(f"{pid}|{message}")
    return pids, warnings


def test_a_single_process_is_not_warned(tmp_path: Path) -> None:
    _, warnings = _run(tmp_path, "plain")
    assert warnings == []


def test_a_forked_worker_is_warned_once(tmp_path: Path) -> None:
    (parent, child), warnings = _run(tmp_path, "fork")
    assert [line.split("|")[0] for line in warnings] == [str(child)]  # once, and in the child
    message = warnings[0]
    assert "REDIS_URL" in message
    assert f"forked from process {parent}" in message
    assert "not shared" in message


def test_a_spawned_worker_is_warned_once(tmp_path: Path) -> None:
    (parent, child), warnings = _run(tmp_path, "spawn")
    assert [line.split("|")[0] for line in warnings] == [str(child)]
    assert f"multiprocessing started it from process {parent}" in warnings[0]


def test_a_gunicorn_process_is_warned_once(tmp_path: Path) -> None:
    (pid,), warnings = _run(tmp_path, "gunicorn")
    assert [line.split("|")[0] for line in warnings] == [str(pid)]
    assert "gunicorn" in warnings[0]
