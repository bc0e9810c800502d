"""`redis-patterns demo ratelimit` runs its scenario and reports success."""

from __future__ import annotations

import subprocess
import sys


def test_demo_ratelimit_section_behaves() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redis_patterns.cli", "demo", "ratelimit"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SlidingLog (one script):" in done.stdout
    assert "admitted 100" in done.stdout
    assert "FixedWindow" in done.stdout
