"""The shape of ``pipeline/``, kept by reading its source (``ast``), never by importing it.

Every module sits on a floor; an import may point to the same floor or a lower one, never up,
and the modules' import graph has no circle (lazy and ``TYPE_CHECKING`` imports count too).
Also kept here: module and function size, and that only the engine names the docker CLI.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"

# Longest prefix wins. Lower floors know nothing of higher ones.
FLOORS: dict[str, int] = {
    "pipeline": 0,  # the package itself (its __init__)
    "pipeline.errors": 0,
    "pipeline.proc": 0,
    "pipeline.clock": 0,
    "pipeline.oci": 1,  # references, digests, manifests, platforms, labels: pure
    "pipeline.config": 1,
    "pipeline.gitref": 1,
    "pipeline.github": 1,
    "pipeline.lint": 2,
    "pipeline.engine": 2,  # the one caller of the docker CLI
    "pipeline.registry": 2,  # the OCI distribution client
    "pipeline.history": 3,  # store, report, notify
    "pipeline.build": 4,
    "pipeline.scan": 4,
    "pipeline.release": 5,
    "pipeline.deploy": 5,
    "pipeline.bench": 6,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def floor(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise AssertionError(f"{module} has no floor: add it (or its package) to FLOORS")


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The pipeline modules an ``from X import a, b`` names (a submodule when ``a`` is one)."""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    if not base.startswith("pipeline"):
        return []
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if name in MODULES else base for name in names]


def imports(module: str) -> Iterator[tuple[str, int]]:
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pipeline"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            for target in _resolve(module, path, node):
                yield target, node.lineno


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports(m) if t != m and t in MODULES} for m in MODULES}


def test_every_module_has_a_floor() -> None:
    for module in MODULES:
        floor(module)


def test_imports_point_down_or_across_never_up() -> None:
    upward = [
        f"{MODULES[m].relative_to(ROOT)}:{line} {m} (floor {floor(m)}) imports {t} "
        f"(floor {floor(t)})"
        for m in MODULES
        for t, line in imports(m)
        if t in MODULES and floor(t) > floor(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "\n".join(circles)


def test_the_library_never_imports_invoke() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in MODULES.values()
        if re.search(r"^\s*(from|import) invoke\b", path.read_text(), re.MULTILINE)
    ]
    assert not offenders


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines"


def test_function_size() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


def test_only_the_engine_names_the_docker_cli() -> None:
    callers = {
        str(path.relative_to(ROOT))
        for path in MODULES.values()
        if '"docker"' in path.read_text() and not path.name.startswith("__")
    }
    assert callers == {"pipeline/engine/cli.py"}, sorted(callers)


def test_tasks_py_is_thin() -> None:
    source = (ROOT / "tasks.py").read_text()
    assert len(source.splitlines()) < 600
    long = [
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > 25
    ]
    assert not long
