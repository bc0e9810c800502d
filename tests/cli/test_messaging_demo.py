"""The messaging demo section runs and reports that it behaved (exit code 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).with_name("redis-patterns")


def test_messaging_demo_section_behaves() -> None:
    result = subprocess.run(
        [str(CLI), "demo", "messaging"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Pub/Sub subscriber (restarted):   received 200, missed 100" in result.stdout
    assert "missed 0, pending afterwards 0" in result.stdout
