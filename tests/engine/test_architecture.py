"""The floors of the code base hold: imports only go downward (see docs/architecture.md).

Every ``import`` of a project module, at the top of a file or inside a
function, is checked against :data:`ALLOWED`; ``_private`` names may not be
imported from another module; the contract imports only the standard library;
and every job of the catalogue resolves (they are strings, so no import check
sees them).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

from slidewise.engine.jobs import JOBS

REPO = Path(__file__).resolve().parents[2]

TASKS = ("preparation", "susceptibility", "mapping", "detection", "maintenance")
LOWER = ("contract", "engine.core", "engine.geo", "engine.imagery")

#: Floor -> the floors it may import (besides itself). Task folders never import each other.
ALLOWED: dict[str, frozenset[str]] = {
    "contract": frozenset(),
    "engine.core": frozenset({"contract"}),
    "engine.geo": frozenset({"contract", "engine.core"}),
    "engine.imagery": frozenset({"contract", "engine.core", "engine.geo"}),
    **{f"engine.{task}": frozenset(LOWER) for task in TASKS},
    "engine": frozenset({"contract", "engine"}) | {f"engine.{t}" for t in TASKS} | set(LOWER),
    "plugin": frozenset({"contract", "plugin"}),
    "bench": frozenset({"contract", "engine", "bench"})
    | {f"engine.{t}" for t in TASKS}
    | set(LOWER),
}


def floor_of_module(module: str) -> str:
    """Floor of a dotted module name inside the package (without ``slidewise.``)."""
    parts = module.split(".")
    if parts[0] == "engine":
        return ".".join(parts[:2]) if len(parts) > 2 or _is_package(parts[:2]) else "engine"
    if parts[0] in ("contract", "bench"):
        return parts[0]
    return "plugin"  # processing_provider, ui, plugin.py, __init__.py


def _is_package(parts: list[str]) -> bool:
    return (REPO.joinpath(*parts) / "__init__.py").is_file()


def module_of(path: Path) -> str:
    """Dotted module name of a source file, relative to the package root."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def source_files() -> list[Path]:
    """Every Python file of the package (tests, scripts and build output left out)."""
    skip = {"tests", "scripts", "build", "dist", ".git"}
    return sorted(p for p in REPO.rglob("*.py") if not skip.intersection(p.relative_to(REPO).parts))


def project_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module without ``slidewise.``, names) for each project import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "slidewise" or node.module.startswith("slidewise."):
                target = node.module.removeprefix("slidewise").lstrip(".")
                names = [a.name for a in node.names]
                found.append((node.lineno, target, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("slidewise."):
                    found.append((node.lineno, alias.name.removeprefix("slidewise."), []))
    return found


def import_violations(path: Path) -> list[str]:
    """Messages for every import of ``path`` that breaks the table or takes a private name."""
    module = module_of(path)
    floor = floor_of_module(module)
    allowed = ALLOWED[floor] | {floor}
    problems = []
    for line, target, names in project_imports(path):
        package = _is_package(target.split("."))
        targets = [f"{target}.{n}" for n in names] if package and names else [target]
        for full in dict.fromkeys(targets):
            to_floor = floor_of_module(full) if full else "plugin"
            if to_floor not in allowed:
                problems.append(f"{module}:{line} imports {full} ({floor} -> {to_floor})")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and target != module:
            problems.append(f"{module}:{line} imports private {', '.join(private)} of {target}")
    return problems


def test_imports_only_go_downward() -> None:
    problems = [msg for path in source_files() for msg in import_violations(path)]
    assert problems == [], "\n".join(problems)


def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """A core module importing a task folder, inside a function, is reported."""
    bad = REPO / "engine" / "core" / "_architecture_probe.py"
    bad.write_text("def f():\n    from slidewise.engine.mapping.apply import run_map\n")
    try:
        assert import_violations(bad) == [
            "engine.core._architecture_probe:2 imports engine.mapping.apply "
            "(engine.core -> engine.mapping)"
        ]
    finally:
        bad.unlink()


def test_the_check_catches_a_private_name_and_a_sideways_import() -> None:
    probe = REPO / "engine" / "detection" / "_architecture_probe.py"
    probe.write_text(
        "from slidewise.engine.mapping import apply\n"
        "from slidewise.engine.geo.raster import _private_helper\n"
    )
    try:
        problems = import_violations(probe)
    finally:
        probe.unlink()
    assert len(problems) == 2
    assert "(engine.detection -> engine.mapping)" in problems[0]
    assert "private _private_helper" in problems[1]


def test_the_plugin_never_imports_the_engine() -> None:
    plugin_files = [p for p in source_files() if floor_of_module(module_of(p)) == "plugin"]
    assert any(p.name == "engine_client.py" for p in plugin_files)
    for path in plugin_files:
        for _, target, _ in project_imports(path):
            assert not target.startswith("engine"), f"{path} imports slidewise.{target}"


def test_the_contract_uses_only_the_standard_library() -> None:
    for path in (REPO / "contract").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                ok = root in sys.stdlib_module_names or root == "slidewise"
                assert ok, f"{path.name} imports {root}"


def test_nothing_imports_bench() -> None:
    for path in source_files():
        if floor_of_module(module_of(path)) == "bench":
            continue
        for _, target, _ in project_imports(path):
            assert not target.startswith("bench"), f"{path} imports slidewise.{target}"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_of_the_catalogue_resolves(name: str) -> None:
    module_name, func_name = JOBS[name].split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func_name)), JOBS[name]
    assert floor_of_module(module_name.removeprefix("slidewise.")) in {f"engine.{t}" for t in TASKS}


#: Longest function allowed (lines, docstring included); declarative tables are module constants.
MAX_FUNCTION_LINES = 80


def long_functions(path: Path) -> list[str]:
    """``module:function (N lines)`` for each function of ``path`` over the limit."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{module_of(path)}:{node.name} ({length} lines)")
    return found


def test_functions_are_short() -> None:
    found = [msg for path in source_files() for msg in long_functions(path)]
    assert found == [], "\n".join(found)


def test_the_length_check_catches_a_long_function() -> None:
    probe = REPO / "engine" / "core" / "_architecture_probe.py"
    probe.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    try:
        assert long_functions(probe) == [
            f"engine.core._architecture_probe:f ({MAX_FUNCTION_LINES + 1} lines)"
        ]
    finally:
        probe.unlink()
