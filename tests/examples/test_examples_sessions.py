"""The sessions examples run as-is (embedded server, no REDIS_URL) and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("sessions_*.py"))


def test_there_are_examples() -> None:
    assert {p.name for p in SCRIPTS} >= {
        "sessions_basic.py",
        "sessions_starlette.py",
        "sessions_fastapi.py",
        "sessions_flask.py",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
