"""The provider, its algorithms and the plugin metadata, through PyQGIS."""

from __future__ import annotations

import configparser
from pathlib import Path

from plugin_helpers import REPO

_KEEP: list = []

EXPECTED_GROUPS = {
    "checkengine": "engine",
    "terrainfactors": "preparation",
    "samplefactors": "preparation",
    "segmentblocks": "susceptibility",
    "trainsusceptibility": "susceptibility",
    "predictsusceptibility": "susceptibility",
    "evaluatesusceptibility": "susceptibility",
    "trainmapping": "mapping",
    "maplandslides": "mapping",
    "evaluatemapping": "mapping",
}


def test_metadata_follows_plugin_conventions() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in (
        "name",
        "qgisMinimumVersion",
        "description",
        "about",
        "version",
        "author",
        "tags",
        "icon",
        "category",
        "hasProcessingProvider",
        "experimental",
        "changelog",
    ):
        assert general.get(key), f"metadata.txt lacks {key}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / general["icon"]).is_file()
    # The project has no public homepage, tracker or address yet: none is made up.
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    assert "example.org" not in text and "github.com/slidewise" not in text
    assert "make install" not in general["about"]


def test_provider_lists_algorithms_with_help_and_icons(qgis_app) -> None:
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("slidewise")
    assert provider is not None
    algorithms = {alg.name(): alg for alg in provider.algorithms()}
    for name, group in EXPECTED_GROUPS.items():
        assert name in algorithms
        alg = algorithms[name]
        assert alg.groupId() == group
        assert alg.shortHelpString()
        assert not alg.icon().isNull()
        for definition in alg.parameterDefinitions():
            assert definition.help(), f"{name}.{definition.name()} has no help text"
            assert definition.help() in alg.shortHelpString()


def test_classfactory_registers_provider_in_init_processing(qgis_app) -> None:
    from qgis.core import QgsApplication

    import slidewise

    registry = QgsApplication.processingRegistry()
    registry.removeProvider(registry.providerById("slidewise"))
    plugin = slidewise.classFactory(None)
    plugin.initProcessing()
    assert registry.providerById("slidewise") is not None
    plugin.unload()
    assert registry.providerById("slidewise") is None
    # Leave a registered provider for the other tests; keep the plugin object alive.
    again = slidewise.classFactory(None)
    again.initProcessing()
    _KEEP.append(again)
    assert registry.algorithmById("slidewise:terrainfactors") is not None


def test_styles_exist_for_styled_outputs() -> None:
    styles = REPO / "resources" / "styles"
    assert (styles / "terrain_factors.qml").is_file()
    for qml in styles.glob("*.qml"):
        text = qml.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE qgis") and "</qgis>" in text, qml


def test_engine_package_is_importable_without_qgis(tmp_path: Path) -> None:
    """The root package imports without touching QGIS (the engine imports it too)."""
    import subprocess
    import sys

    from plugin_helpers import PLUGINS_DIR

    code = (
        "import sys, slidewise, slidewise.engine.jobs\n"
        "assert not any(m.startswith(('qgis', 'PyQt')) for m in sys.modules), "
        "[m for m in sys.modules if m.startswith(('qgis','PyQt'))]\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(PLUGINS_DIR), "PATH": "/usr/bin:/bin"},
    )


def test_package_zip_has_plugin_without_dev_files(tmp_path: Path) -> None:
    import subprocess
    import zipfile

    out = (
        subprocess.run(
            ["bash", str(REPO / "scripts" / "package.sh")],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    names = zipfile.ZipFile(out).namelist()
    assert "slidewise/metadata.txt" in names
    assert "slidewise/engine/worker.py" in names
    assert "slidewise/resources/styles/terrain_factors.qml" in names
    assert not [n for n in names if n.startswith("slidewise/tests/") or "__pycache__" in n]
    assert not [n for n in names if n.startswith(("slidewise/.ci", "slidewise/scripts"))]


def test_checkengine_saves_its_report_only_when_asked(qgis_app, tmp_path: Path) -> None:
    """OUTPUT comes from the checkengine spec; the engine writes the JSON report."""
    import json

    import processing

    plain = processing.run("slidewise:checkengine", {})
    assert plain["DEVICE"] in ("cpu", "cuda", "mps")
    assert not plain.get("OUTPUT")
    report = tmp_path / "report.json"
    saved = processing.run("slidewise:checkengine", {"OUTPUT": str(report)})
    assert saved["OUTPUT"] == str(report)
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["device"] == saved["DEVICE"] and written["python"] == saved["PYTHON"]
    assert json.loads(saved["PACKAGES"]) == written["packages"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
