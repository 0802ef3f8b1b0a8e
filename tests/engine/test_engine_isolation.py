"""The engine runs without QGIS: no engine module imports qgis, PyQt or plugin code."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository root is the package `slidewise`
PACKAGES = ("engine", "bench")
FORBIDDEN_ROOTS = ("qgis", "PyQt4", "PyQt5", "PyQt6", "sip", "PySide2", "PySide6")
FORBIDDEN_PREFIXES = ("slidewise.processing_provider", "slidewise.ui", "slidewise.plugin")


def _modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module under engine/ and bench/."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(["slidewise", *parts]), path))
    return found


def _is_forbidden(name: str) -> bool:
    root = name.split(".")[0]
    return root in FORBIDDEN_ROOTS or any(
        name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN_PREFIXES
    )


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """Every module name imported anywhere in a file (functions included).

    ``from a import b`` yields ``a`` and ``a.b``; relative imports are resolved;
    ``importlib.import_module("x")`` and ``__import__("x")`` with literal names count.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append((node.lineno, base))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    names.append((node.lineno, first.value))
    return names


def test_the_walker_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import os, qgis.core
            from ..processing_provider import provider
            from .. import ui
            def later():
                from PyQt5.QtCore import QObject
                import importlib
                importlib.import_module("sip")
            """
        )
    )
    names = {name for _, name in _imports("slidewise.engine.sample", sample)}
    assert {"os", "qgis.core", "slidewise.processing_provider", "slidewise.ui"} <= names
    assert {"PyQt5.QtCore", "sip"} <= names
    assert {n for n in names if _is_forbidden(n)} == {
        "qgis.core",
        "slidewise.processing_provider",
        "slidewise.processing_provider.provider",
        "slidewise.ui",
        "PyQt5.QtCore",
        "PyQt5.QtCore.QObject",
        "sip",
    }


def test_no_engine_module_imports_qgis_pyqt_or_plugin_code() -> None:
    modules = _modules()
    assert any(name == "slidewise.engine.worker" for name, _ in modules)
    offences = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for module, path in modules
        for line, name in _imports(module, path)
        if _is_forbidden(name)
    ]
    assert offences == [], "\n".join(offences)


def test_job_catalogue_points_into_the_engine() -> None:
    from slidewise.engine.jobs import JOBS

    for job, target in JOBS.items():
        module = target.split(":")[0]
        assert module.startswith(("slidewise.engine.", "slidewise.bench.")), (job, target)
        assert not _is_forbidden(module)


_IMPORT_ALL = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys, traceback

    forbidden_roots, forbidden_prefixes, modules = json.loads(sys.argv[1])
    attempts, failures = [], {}
    current = {"module": None}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in forbidden_roots or any(
                name == p or name.startswith(p + ".") for p in forbidden_prefixes
            ):
                attempts.append([current["module"], name])
                raise ImportError(f"blocked import of {name} (the engine must not need QGIS)")
            return None

    sys.meta_path.insert(0, Blocker())
    for module in modules:
        current["module"] = module
        try:
            importlib.import_module(module)
        except BaseException:
            failures[module] = traceback.format_exc(limit=-3)
    for probe in ("qgis.core", "PyQt5"):
        current["module"] = "<probe>"
        try:
            importlib.import_module(probe)
        except ImportError:
            pass
    print("RESULT " + json.dumps({"attempts": attempts, "failures": failures}))
    """
)


def test_every_engine_module_imports_without_qgis() -> None:
    modules = [name for name, _ in _modules()]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_ALL,
            json.dumps([FORBIDDEN_ROOTS, FORBIDDEN_PREFIXES, modules]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    # The blocker works: the two probes were stopped.
    assert result["attempts"][-2:] == [["<probe>", "qgis"], ["<probe>", "PyQt5"]]
    engine_attempts = [a for a in result["attempts"] if a[0] != "<probe>"]
    assert engine_attempts == [], f"engine imports tried to load QGIS/Qt: {engine_attempts}"
    if result["failures"]:
        pytest.fail(
            "engine modules that do not import:\n"
            + "\n".join(f"{m}:\n{tb}" for m, tb in result["failures"].items())
        )
