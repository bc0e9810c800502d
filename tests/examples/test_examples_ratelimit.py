"""Every rate limiting example runs as-is (embedded server, no REDIS_URL) and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("ratelimit_*.py"))


def test_there_are_examples() -> None:
    assert {p.stem for p in EXAMPLES} >= {
        "ratelimit_basic",
        "ratelimit_multi",
        "ratelimit_asgi",
        "ratelimit_flask",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
