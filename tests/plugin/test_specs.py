"""Each parameter declared once: the Processing dialogs are exactly what the specifications say.

For every algorithm of the provider whose class has a ``SPEC``, the parameter
definitions QGIS sees (names, type, default, range, options, optional and
advanced flags, help) are compared with the contract's specification. The
engine side of the same rule is ``tests/engine/test_specs.py``; the plugin may
not import the engine, so its job catalogue is read from the source.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

import pytest
from plugin_helpers import REPO

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs import RUNS_IN_QGIS, SPEC_MODULES, spec_of
from slidewise.contract.specs.groups import RUNTIME_NAMES

#: Processing parameter type of each kind of parameter.
PROCESSING_TYPES = {
    "int": "number",
    "float": "number",
    "bool": "boolean",
    "choice": "enum",
    "text": "string",
    "names": "string",
    "numbers": "string",
    "file": "file",
    "folder": "file",
    "raster": "raster",
    "rasters": "multilayer",
    "vector": "vector",
    "points": "vector",
    "polygons": "vector",
    "points_or_polygons": "vector",
    "field": "field",
    "output_raster": "rasterDestination",
    "output_vector": "vectorDestination",
    "output_file": "fileDestination",
    "output_folder": "folderDestination",
    "connection": "providerconnection",
    "schema": "databaseschema",
}


def engine_jobs() -> set[str]:
    """The job names of ``engine/jobs.py``'s ``JOBS``, read from its source."""
    tree = ast.parse((REPO / "engine" / "jobs.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "JOBS":
            assert isinstance(node.value, ast.Dict)
            return {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    raise AssertionError("engine/jobs.py has no JOBS")


@pytest.fixture(scope="module")
def algorithms(qgis_app) -> dict[str, Any]:
    """Algorithm id -> the provider's instance (initialised by the registry)."""
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("slidewise")
    assert provider is not None
    return {alg.name(): alg for alg in provider.algorithms()}


def specced(algorithms: dict[str, Any]) -> dict[str, Any]:
    return {name: alg for name, alg in algorithms.items() if type(alg).SPEC is not None}


def shown(spec: AlgorithmSpec) -> list[Param]:
    """The parameters of ``spec`` the dialog shows (runtime options apart)."""
    return [p for p in spec.params if p.name not in spec.hidden | RUNTIME_NAMES]


def expected_optional(param: Param) -> bool:
    """A parameter the user may leave empty: not required, and not one always holding a value."""
    if param.kind in ("bool", "choice"):
        return False
    if param.kind in ("int", "float"):
        return not param.required and param.default is None
    return not param.required


def expected_default(param: Param) -> Any:
    if param.kind == "bool":
        return bool(param.default)
    if param.kind == "choice":
        return param.choices.index(param.default) if param.default in param.choices else 0
    if param.kind in ("text", "names", "numbers"):
        default = param.default
        if isinstance(default, list | tuple):
            default = ", ".join(str(v) for v in default)
        return default or ""
    return param.default


def expected(param: Param) -> dict[str, Any]:
    """What the Processing definition of ``param`` must say."""
    out: dict[str, Any] = {
        "name": param.name,
        "type": PROCESSING_TYPES[param.kind],
        "optional": expected_optional(param),
        "advanced": param.advanced,
    }
    if param.kind in ("int", "float", "bool", "choice", "text", "names", "numbers", "field"):
        out["default"] = expected_default(param)
    if param.kind in ("int", "float"):
        out["integer"] = param.kind == "int"
        out["minimum"] = -sys.float_info.max if param.minimum is None else param.minimum
        out["maximum"] = sys.float_info.max if param.maximum is None else param.maximum
    if param.kind == "choice":
        out["options"] = list(param.labels)
    if param.kind in ("file", "folder"):
        out["folder"] = param.kind == "folder"
    if param.file_filter:
        out["file_filter"] = param.file_filter
    if param.kind in ("field", "schema"):
        out["parent"] = param.parent
    if param.kind == "connection":
        out["provider"] = param.provider
    if param.kind.startswith("output_"):
        out["create_by_default"] = param.create_by_default
    return out


def actual(definition: Any, param: Param) -> dict[str, Any]:
    """The same entries, read from the Processing definition."""
    from qgis.core import (
        QgsProcessingParameterDefinition,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
    )

    flags = definition.flags()
    out: dict[str, Any] = {
        "name": definition.name(),
        "type": definition.type(),
        "optional": bool(flags & QgsProcessingParameterDefinition.FlagOptional),
        "advanced": bool(flags & QgsProcessingParameterDefinition.FlagAdvanced),
    }
    if param.kind in ("int", "float", "bool", "choice", "text", "names", "numbers", "field"):
        out["default"] = definition.defaultValue()
    if param.kind in ("int", "float"):
        out["integer"] = definition.dataType() == QgsProcessingParameterNumber.Integer
        out["minimum"] = definition.minimum()
        out["maximum"] = definition.maximum()
    if param.kind == "choice":
        out["options"] = list(definition.options())
    if param.kind in ("file", "folder"):
        out["folder"] = definition.behavior() == QgsProcessingParameterFile.Folder
    if param.file_filter:
        out["file_filter"] = definition.fileFilter()
    if param.kind == "field":
        out["parent"] = definition.parentLayerParameterName()
    if param.kind == "schema":
        out["parent"] = definition.parentConnectionParameterName()
    if param.kind == "connection":
        out["provider"] = definition.providerId()
    if param.kind.startswith("output_"):
        out["create_by_default"] = definition.createByDefault()
    return out


def test_every_algorithm_has_an_engine_job(algorithms: dict[str, Any]) -> None:
    jobs = engine_jobs()
    assert algorithms, "the provider has no algorithms"
    for name, alg in algorithms.items():
        if getattr(type(alg), "RUNS_IN_QGIS", False):
            # Runs in QGIS's own Python (setting up the engine): it has no job, and must say so.
            assert name in RUNS_IN_QGIS and not type(alg).JOB, name
            continue
        assert name in jobs, f"slidewise:{name} has no engine job"
        assert type(alg).JOB in jobs, f"slidewise:{name} runs unknown job {type(alg).JOB}"


def test_every_algorithm_has_a_spec(algorithms: dict[str, Any]) -> None:
    without = sorted(name for name, alg in algorithms.items() if type(alg).SPEC is None)
    assert without == [], f"algorithms declaring parameters by hand: {without}"


def test_specs_are_the_registered_ones(algorithms: dict[str, Any]) -> None:
    found = specced(algorithms)
    assert {"terrainfactors", "checkengine"} <= set(found)
    for name, alg in found.items():
        spec = type(alg).SPEC
        assert name in SPEC_MODULES, f"{name}'s SPEC is not registered in SPEC_MODULES"
        assert spec is spec_of(name)
        assert spec.name == name
        assert type(alg).JOB == (name if name not in RUNS_IN_QGIS else ""), name
        assert spec.hidden <= spec.names, f"{name}: hidden names not in the spec"


def test_dialog_parameters_are_the_spec(algorithms: dict[str, Any]) -> None:
    for name, alg in specced(algorithms).items():
        spec: AlgorithmSpec = type(alg).SPEC
        definitions = [d for d in alg.parameterDefinitions() if d.name() not in RUNTIME_NAMES]
        assert [d.name() for d in definitions] == [p.name for p in shown(spec)], name
        for definition in definitions:
            param = spec[definition.name()]
            assert actual(definition, param) == expected(param), f"{name}.{param.name}"


def test_help_and_label_give_range_and_unit(algorithms: dict[str, Any]) -> None:
    for name, alg in specced(algorithms).items():
        for param in shown(type(alg).SPEC):
            definition = alg.parameterDefinition(param.name)
            text = definition.help()
            where = f"{name}.{param.name}: {text!r}"
            assert param.help.strip() and text.startswith(param.help.strip()), where
            if param.kind in ("int", "float", "numbers") and param.range_text():
                assert param.range_text() in text, where
            if param.unit:
                assert f"Unit: {param.unit}." in text, where
                assert definition.description().endswith(f"({param.unit})"), where
            if param.kind == "choice":
                assert all(choice in text for choice in param.choices), where


def test_runtime_parameters_come_with_the_flag(algorithms: dict[str, Any]) -> None:
    for name, alg in specced(algorithms).items():
        declared = {d.name() for d in alg.parameterDefinitions()} & RUNTIME_NAMES
        assert declared == (RUNTIME_NAMES if type(alg).RUNTIME_PARAMETERS else set()), name
