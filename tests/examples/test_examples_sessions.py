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


def test_the_typed_example_needs_no_any_and_no_ignores() -> None:
    """``get_session`` gives app code a typed session: ``mypy --strict`` passes on the example
    (as on every example, through ``make lint``) without ``Any``, ignores or casts."""
    import re

    from mypy import api

    source = (EXAMPLES / "sessions_typed.py").read_text()
    code = source.split('"""', 2)[2]  # after the module docstring, which names them
    assert not re.search(r"\bAny\b|type:\s*ignore|\bcast\(", code)
    stdout, stderr, status = api.run(["--strict", str(EXAMPLES / "sessions_typed.py")])
    assert status == 0, stdout + stderr
