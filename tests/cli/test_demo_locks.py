"""`redis-patterns demo locks` runs its scenarios on an embedded server and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_locks_section() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redis_patterns.cli", "demo", "locks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PTTL -1" in done.stdout  # the naive lock's deadlock was measured
    assert "refused" in done.stdout  # the paused holder's stale write was rejected
