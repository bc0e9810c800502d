"""The docs site builds with --strict, and every ```python block in the docs and README runs.

A block runs as a script, unless the line before its fence says otherwise:
``<!-- pytest -->`` runs it as a test module with this package's fixtures, and
``<!-- fragment: why -->`` only compiles it (for an excerpt that names an object defined
elsewhere; keep these rare).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redis_patterns import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?:(<!-- (pytest|fragment)[^>]*-->)\n)?```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, match in enumerate(FENCE.finditer(page.read_text()), 1):
            kind = match.group(2) or "script"
            found.append((f"{page.relative_to(ROOT)}#{number}-{kind}", kind, match.group(3)))
    return found


BLOCKS = _blocks()


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()


def test_fragments_are_rare() -> None:
    fragments = [where for where, kind, _ in BLOCKS if kind == "fragment"]
    assert len(fragments) <= len(BLOCKS) // 10 + 1, fragments


@pytest.mark.parametrize(("where", "kind", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_python_example_runs(
    where: str, kind: str, code: str, valkey_server: EmbeddedServer, tmp_path: Path
) -> None:
    if kind == "fragment":
        compile(code, where, "exec")
        return
    if kind == "pytest":
        target = tmp_path / "test_example.py"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)]
        command += ["--backends", "valkey", "-W", "error", "--rootdir", str(tmp_path)]
        command += ["-o", "asyncio_default_fixture_loop_scope=function"]
    else:
        target = tmp_path / "example.py"
        command = [sys.executable, str(target)]
    target.write_text(code)
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "REDIS_URL": valkey_server.url},
        check=False,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
