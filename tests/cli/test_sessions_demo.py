"""The sessions demo section runs and reports success."""

from __future__ import annotations

import subprocess
import sys


def test_demo_section_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redis_patterns.cli", "demo", "sessions"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "log out everywhere" in done.stdout
    assert "-> OK" in done.stdout
