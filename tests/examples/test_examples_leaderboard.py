"""The leaderboard example runs as-is (embedded server, no REDIS_URL), and so does its demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_leaderboard_basics_runs() -> None:
    result = _run(str(EXAMPLES / "leaderboard_basics.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "#1 diana 3100" in result.stdout


def test_demo_section_behaves() -> None:
    result = _run("-m", "redis_patterns.cli", "demo", "leaderboard")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded 100,000 players" in result.stdout
