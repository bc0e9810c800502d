"""The architecture's rules, checked: pure core without I/O, generated sync facades up to date."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "redis_patterns"
PURE = [
    "_plan.py",
    "_keys.py",
    "_validate.py",
    "_errors.py",
    "_script.py",
    "_functions.py",
    "_logging.py",
    "_core",
]
# threading is allowed: a lock guarding in-process state (counters, the near cache) is not I/O.
IO_LIBRARIES = {"redis", "socket", "asyncio", "subprocess"}


def _pure_modules() -> list[Path]:
    files: list[Path] = []
    for name in PURE:
        path = PACKAGE / name
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return files


def test_pure_core_imports_no_io_library() -> None:
    offenders = []
    for path in _pure_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in IO_LIBRARIES]
    assert offenders == []


def test_pure_core_imports_only_pure_package_modules() -> None:
    allowed = {"_plan", "_keys", "_validate", "_errors", "_script", "_functions", "_serializers"}
    allowed |= {"_core", "_logging"}
    offenders = []
    for path in _pure_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                module = (node.module or "").split(".")[0]
                # Script/FunctionLibrary.__call__ import the runners lazily: the one exception.
                lazy_runner = path.name in ("_script.py", "_functions.py") and module == "_runner"
                sibling_core = path.parent.name == "_core" and node.level == 1
                if module and module not in allowed and not lazy_runner and not sibling_core:
                    offenders.append(f"{path.name}: .{node.module}")
    assert offenders == []


def test_generated_sync_facades_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_lua_script_has_a_header() -> None:
    for script in sorted((PACKAGE / "lua").glob("*.lua")):
        lines = script.read_text().splitlines()
        assert lines, f"{script.name} is empty"
        assert lines[0].startswith("--"), f"{script.name} lacks its header"
        assert any(line.startswith("-- returns") for line in lines[:15]), script.name
