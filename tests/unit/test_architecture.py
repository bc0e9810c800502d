"""The architecture's rules, checked: the layers (no import cycle, no upward import), who imports
redis, a pure core without I/O, every module in docs/architecture.md, sync facades up to date."""

from __future__ import annotations

import ast
import re
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
    "_logging.py",
    "_metrics.py",
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
    allowed = {"_plan", "_keys", "_validate", "_errors", "_script", "_serializers"}
    allowed |= {"_core", "_logging", "_metrics"}
    offenders = []
    for path in _pure_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                module = (node.module or "").split(".")[0]
                sibling_core = path.parent.name == "_core" and node.level == 1
                if module and module not in allowed and not sibling_core:
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


# The layers of docs/architecture.md, lowest first: a module imports from its own layer or lower
# ones only. A top-level name stands for the module or the whole subpackage ("" is the package's
# __init__).
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundations",
        {"_version", "_errors", "_logging", "_metrics", "_validate", "_keys", "_serializers"}
        | {"_callbacks", "_flight", "_background", "_reaper"},
    ),
    ("effects", {"_plan", "_script"}),
    ("pure core", {"_core"}),
    (
        "redis-py boundary",
        {"_autopipeline", "_redis", "_redis_steps", "_redis_transaction", "_clients"}
        | {"_pubsub", "_pubsub_async", "_pubsub_sync"},
    ),
    ("runners", {"_runner"}),
    ("facades", {"_async", "_sync", "_scripting"}),
    (
        "servers",
        {"_topology", "_embedded", "_embedded_cluster", "_connect", "_server", "_sentinel"},
    ),
    ("package and tools", {"", "metrics", "cli", "testing", "integrations"}),
]
# Who may import redis: the boundary, the embedded servers and what drives them, the tools, and
# the Django settings reader (it builds a client from a Django cache/session URL).
REDIS_IMPORTERS = {"_redis", "_redis_steps", "_redis_transaction", "_autopipeline", "_clients"}
REDIS_IMPORTERS |= {"_pubsub", "_pubsub_async", "_pubsub_sync"}
REDIS_IMPORTERS |= {"_topology", "_embedded", "_embedded_cluster"}
REDIS_IMPORTERS |= {"_connect", "_sentinel", "cli", "testing", "integrations.django._location"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> tuple[set[str], set[str]]:
    """The package's modules that ``name`` imports (anywhere in the file: at the top, in a
    function, under TYPE_CHECKING), and the outside top-level packages it imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            prefix = node.module or ""
            if node.level:
                parts = ["redis_patterns", *package.split(".")] if package else ["redis_patterns"]
                parts = parts[: len(parts) - (node.level - 1)]
                prefix = ".".join([*parts, *([node.module] if node.module else [])])
            # ``from .x import y``: the module x.y if there is one, else the module x.
            local = prefix.removeprefix("redis_patterns").lstrip(".")
            for alias in node.names:
                inner = f"{local}.{alias.name}".lstrip(".")
                same = prefix == "redis_patterns" or prefix.startswith("redis_patterns.")
                targets.append(f"redis_patterns.{inner}" if same and inner in MODULES else prefix)
    inside: set[str] = set()
    outside: set[str] = set()
    for target in targets:
        if target == "redis_patterns" or target.startswith("redis_patterns."):
            found = target.removeprefix("redis_patterns").lstrip(".")
            while found and found not in MODULES:
                found = found.rpartition(".")[0]
            if found != name:
                inside.add(found)
        else:
            outside.add(target.split(".")[0])
    return inside, outside


GRAPH = {name: _imports(name)[0] for name in MODULES}


def _layer(name: str) -> int:
    top = name.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} belongs to no layer: place it in LAYERS and the docs")


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over every import of the package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(GRAPH[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{name} -> {other}"
        for name, others in sorted(GRAPH.items())
        for other in sorted(others)
        if _layer(other) > _layer(name)
    ]
    assert upward == []


def test_only_the_boundary_and_the_tools_import_redis() -> None:
    def allowed(name: str) -> bool:
        return any(name == ok or name.startswith(f"{ok}.") for ok in REDIS_IMPORTERS)

    importers = sorted(name for name in MODULES if "redis" in _imports(name)[1])
    assert [name for name in importers if not allowed(name)] == []
    # The runners and the facades drive redis-py only through the boundary.
    assert not {"_runner", "_scripting"} & set(importers)
    assert not [name for name in importers if name.startswith(("_async", "_sync", "_core"))]
    # Facades see the boundary only through the runner (which re-exports the client types),
    # except the Subscriber, which drives its pub/sub links.
    reaching = {
        f"{name} -> {other}"
        for name, others in GRAPH.items()
        if name.startswith(("_async.", "_sync."))
        for other in others
        if other in ("_redis", "_clients", "_pubsub", "_pubsub_async", "_pubsub_sync")
    }
    assert reaching == {"_async.pubsub -> _pubsub_async", "_sync.pubsub -> _pubsub_sync"}


def _layer_map() -> set[str]:
    """The modules docs/architecture.md's layer map names: ``dir/{a,b}.py`` stands for
    ``dir/a.py`` and ``dir/b.py`` (and may span lines)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = doc.split("## Layers", 1)[1].split("```", 2)[1]
    block = re.sub(r",\s*\n\s*", ",", block)  # a brace group continued on the next line
    named: set[str] = set()
    for folder, group, single in re.findall(r"([\w/]*)\{([\w,]+)\}\.py|([\w/]+\.py)", block):
        if single:
            named.add(single)
        else:
            named |= {f"{folder}{member}.py" for member in group.split(",")}
    return named


def test_the_layer_map_lists_every_module() -> None:
    files = {p.relative_to(PACKAGE).as_posix() for p in MODULES.values()}
    files = {f for f in files if not f.startswith("_sync/")}  # generated from _async/
    named = _layer_map()
    assert sorted(files - named) == []  # modules the map leaves out
    assert sorted(named - files) == []  # modules it names that do not exist


def test_every_module_has_a_purpose_docstring() -> None:
    missing = [
        name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []
