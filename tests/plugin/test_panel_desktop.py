"""The Slidewise panel in a real QGIS GUI under Xvfb, on real data.

The test starts this file as a script under ``xvfb-run`` (a GUI ``QgsApplication``
with a map canvas, a layer tree and the panel docked in a main window: QGIS's
``iface`` only exists in the desktop application, so a small stand-in gives the
panel its canvas and message bar). The script drives the panel as a user would:
terrain factors on the Ecuador DEM, a cancelled run, a mapping model trained for
one epoch on the Bijie pairs and a Bijie test image mapped with it. It writes what
it saw to ``result.json`` and screenshots to ``docs/images/panel_*.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
IMAGES = REPO / "docs" / "images"
BIJIE = REPO / "tests" / "data" / "bijie"
DEM = REPO / "tests" / "data" / "ecuador" / "dem_10m.tif"


# --- the test (pytest side) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def desktop_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the script below under Xvfb once and return its result."""
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb)")
    out = tmp_path_factory.mktemp("panel-desktop")
    sys.path.insert(0, str(HERE))
    from plugin_helpers import PLUGINS_DIR

    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # the real X server of Xvfb, not offscreen
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(out / "profile")
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    result_file = out / "result.json"
    assert result_file.is_file(), f"no result:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(result_file.read_text())
    result["_log"] = proc.stderr[-4000:]
    return result


def test_panel_runs_terrain_factors_and_styles_the_output(desktop_run: dict) -> None:
    terrain = desktop_run["terrain"]
    assert terrain["ok"], desktop_run["_log"]
    assert Path(terrain["output"]).is_file()
    assert "slidewise_runs" in terrain["output"]
    assert terrain["group"].startswith("Slidewise run ")
    assert terrain["layers"] == ["Terrain factors"]
    assert terrain["renderers"] == ["multibandcolor"] or terrain["styled"]
    assert max(terrain["progress"]) == 100
    assert len(set(terrain["progress"])) > 2, "progress never moved"
    # the next steps got the factor stack
    assert terrain["next_inputs"]["segmentblocks"]
    assert terrain["next_inputs"]["trainsusceptibility"]


def test_panel_runs_the_susceptibility_chain(desktop_run: dict) -> None:
    chain = desktop_run["chain"]
    assert chain["segmentblocks"], desktop_run["_log"]
    inputs = chain["train_inputs"]
    assert inputs["INPUT"] and inputs["BLOCKS"].endswith(".tif") and inputs["INVENTORY"]
    assert chain["train_label"] == "lslpts"
    assert chain["train"], desktop_run["_log"]
    assert Path(chain["model"]).parent.name == "slidewise_models"
    assert chain["predict_model"] == chain["model"]
    assert chain["predict"], desktop_run["_log"]
    assert all(chain["evaluate_inputs"].values()), chain["evaluate_inputs"]
    assert chain["evaluate"], desktop_run["_log"]
    assert chain["report"].endswith(".html") and Path(chain["report"]).is_file()
    assert chain["layers"] == [
        "Block polygons",
        "Susceptibility classes",
        "Susceptibility",
        "Terrain factors",
    ]


def test_cancel_leaves_nothing_behind(desktop_run: dict) -> None:
    cancel = desktop_run["cancel"]
    assert not cancel["ok"]
    assert cancel["status"].startswith("Cancelled")
    assert cancel["output"].endswith(".safetensors")
    assert not cancel["output_exists"]
    assert cancel["new_files"] == [], cancel["new_files"]
    assert not cancel["mapping_group"], "no layer group for a run that wrote nothing"
    assert not cancel["run_folder"], "the empty run folder is removed"


def test_mapping_model_goes_to_the_project_models_folder(desktop_run: dict) -> None:
    train = desktop_run["train"]
    assert train["ok"], desktop_run["_log"]
    assert Path(train["model"]).is_file()
    assert Path(train["model"]).parent.name == "slidewise_models"
    assert train["map_model_input"] == train["model"]
    assert train["card_task"] == "Landslide mapping (segmentation)"


def test_mapping_adds_styled_layers_in_order(desktop_run: dict) -> None:
    mapping = desktop_run["map"]
    assert mapping["ok"], desktop_run["_log"]
    names = mapping["layers"]
    assert names == [
        "Landslide polygons",
        "Landslide mask",
        "Landslide probability",
    ]
    assert mapping["opacity"]["Landslide probability"] == pytest.approx(0.6)
    assert mapping["visible"]["Landslide mask"] is False
    assert mapping["evaluate_input"]
    canvas_aoi = mapping["canvas_aoi"]
    assert canvas_aoi["features"] == 1
    assert canvas_aoi["aoi"] == pytest.approx(canvas_aoi["canvas"])


def test_mapped_layers_overlay_the_image(desktop_run: dict) -> None:
    """Outputs of a PNG without georeference lie on the image as QGIS draws it."""
    mapping = desktop_run["map"]
    image = _extent(mapping["image_extent"])
    for name, text in mapping["extents"].items():
        if name == "Landslide polygons":  # lies inside the image, where landslides were found
            extent = _extent(text)
            assert extent[0] < extent[2] and extent[1] < extent[3], (name, text)
            assert image[0] <= extent[0] and image[1] <= extent[1], (name, text)
            assert extent[2] <= image[2] and extent[3] <= image[3], (name, text)
        else:  # rasters cover the image exactly
            assert text == mapping["image_extent"], name


def _extent(text: str) -> tuple[float, float, float, float]:
    """``xmin,ymin : xmax,ymax`` (QgsRectangle.toString) as four numbers."""
    low, high = (part.split(",") for part in text.split(" : "))
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def test_map_many_scenes_step_is_built_from_the_spec(desktop_run: dict) -> None:
    """The Mapping tab's last step shows mapscenes' parameters, in order, with their help."""
    from slidewise.contract.specs import spec_of

    scenes = desktop_run["scenes"]
    assert scenes["title"] == "4. Map many scenes"
    spec = spec_of("mapscenes")
    shown = [p.name for p in spec.params if p.name not in spec.hidden]
    assert [name for name in scenes["widgets"] if name in spec.names] == shown
    for param in spec.params:
        if param.name in shown:
            assert param.help in scenes["tooltips"][param.name], param.name
    assert set(scenes["advanced"]) >= {p.name for p in spec.params if p.advanced}
    assert "FOOTPRINTS" not in scenes["advanced"]
    assert scenes["model_placeholder"] == "[the shipped landslide model]"


def test_map_many_scenes_adds_the_styled_inventory(desktop_run: dict) -> None:
    """Two overlapping scenes from a footprint layer: one inventory layer, merged polygons."""
    scenes = desktop_run["scenes"]
    assert scenes["model"] == desktop_run["train"]["model"], "the trained model is chained"
    first = scenes["runs"][0]
    assert first["ok"], desktop_run["_log"]
    assert (first["mapped"], first["skipped"]) == (2, 0)
    assert first["layers"] == ["Landslide inventory"]
    assert first["source"].endswith("mapscenes_inventory.gpkg|layername=landslide_inventory")
    assert "slidewise_runs" in first["source"]
    assert first["features"] == first["polygons"] > 0
    assert first["merged"] > 0, "polygons of the overlapping scenes were not merged"
    assert first["renderer"] == first["polygon_renderer"], "not styled as landslide polygons"
    assert max(first["progress"]) == 100
    assert len(set(first["progress"])) > 2, "progress never moved"
    # run again in the same run: the same inventory, both scenes skipped, one layer
    again = scenes["runs"][1]
    assert again["ok"], desktop_run["_log"]
    assert (again["mapped"], again["skipped"]) == (0, 2)
    assert again["source"] == first["source"]
    assert again["layers"] == ["Landslide inventory"]
    assert again["features"] == first["features"]


def test_models_and_reports_are_found_again_after_a_restart(desktop_run: dict) -> None:
    restart = desktop_run["restart"]
    assert desktop_run["train"]["model"] in restart["models"]
    assert any(path.endswith(".html") for path in restart["reports"]), restart["reports"]


def test_report_opens_inside_qgis(desktop_run: dict) -> None:
    report = desktop_run["report"]
    assert report["ok"], desktop_run["_log"]
    assert report["listed"]
    assert report["viewer"] in ("webkit", "textbrowser")


def test_plugin_menu_has_one_entry_per_workflow(desktop_run: dict) -> None:
    plugin = desktop_run["plugin"]
    assert plugin["menu"] == [
        "Slidewise panel",
        "Susceptibility…",
        "Mapping…",
        "Detection…",
        "Settings…",
        "Set up engine…",
        "Diagnostics…",
        "Help",
    ]
    assert plugin["toolbar"] == ["Slidewise panel"]
    assert plugin["tab"] == "Mapping"
    assert plugin["button_checked"]
    assert plugin["left_after_unload"] == []


def test_screenshots_were_saved(desktop_run: dict) -> None:
    for name in desktop_run["screenshots"]:
        path = IMAGES / name
        assert path.is_file() and path.stat().st_size > 5000, name


REAL_QGIS_SCRIPT = """
import json, traceback
from qgis.utils import iface, plugins
from qgis.PyQt.QtCore import QTimer
from qgis.core import QgsApplication

def check():
    out = {}
    try:
        plugin = plugins["slidewise"]
        out["menu"] = [a.text() for a in plugin.actions]
        out["toolbar"] = plugin.toolbar_action.text()
        plugin.open_panel("mapping")
        out["tab"] = plugin.panel.tabs.tabText(plugin.panel.tabs.currentIndex())
        out["visible"] = plugin.panel.isVisible()
        out["checked"] = plugin.toolbar_action.isChecked()
        provider = QgsApplication.processingRegistry().providerById("slidewise")
        out["groups"] = sorted({alg.group() for alg in provider.algorithms()})
        iface.mainWindow().grab().save(OUT + "/qgis.png")
    except Exception:
        out["error"] = traceback.format_exc()
    with open(OUT + "/qgis.json", "w") as handle:
        json.dump(out, handle)
    QTimer.singleShot(300, lambda: QgsApplication.instance().exit(0))

QTimer.singleShot(3000, check)
"""


def test_real_qgis_desktop_loads_the_plugin(tmp_path: Path) -> None:
    """The real ``qgis`` binary with the plugin in a fresh profile: toolbar, menu, panel."""
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        pytest.skip("xvfb-run or the qgis desktop is not installed")
    sys.path.insert(0, str(HERE))
    from plugin_helpers import PLUGINS_DIR, qgis_desktop_command

    profile = tmp_path / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    (profile / "python" / "plugins" / "slidewise").symlink_to(PLUGINS_DIR / "slidewise")
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text(
        "[PythonPlugins]\nslidewise=true\n\n[qgis]\nshowTips=false\ncheckVersion=false\n"
    )
    script = tmp_path / "check.py"
    script.write_text(f"OUT = {str(tmp_path)!r}\n" + REAL_QGIS_SCRIPT)
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    command = qgis_desktop_command(tmp_path, script, screen="1280x800x24")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    result_file = tmp_path / "qgis.json"
    assert result_file.is_file(), proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert "error" not in result, result.get("error")
    assert result["menu"] == [
        "Susceptibility…",
        "Mapping…",
        "Detection…",
        "Settings…",
        "Set up engine…",
        "Diagnostics…",
        "Help",
    ]
    assert result["toolbar"] == "Slidewise panel"
    assert result["tab"] == "Mapping" and result["visible"] and result["checked"]
    assert result["groups"] == [
        "1. Data preparation",
        "2. Susceptibility",
        "3. Mapping",
        "4. Detection",
        "5. Engine",
    ]


# --- the script (run under Xvfb) ----------------------------------------------------------
class _Iface:
    """What the panel uses of QGIS's ``iface``: the canvas, the message bar, the window."""

    def __init__(self, window, canvas, bar) -> None:
        self.window, self.canvas, self.bar = window, canvas, bar

    def mapCanvas(self):
        return self.canvas

    def messageBar(self):
        return self.bar

    def mainWindow(self):
        return self.window


def _wait(app, panel, seconds: float, until=None) -> tuple[bool, dict, list[float]]:
    """Process events until the panel's step ends; also records progress values."""
    done: dict = {}
    progress: list[float] = []
    panel.step_finished.connect(lambda alg, ok, res: done.update(ok=ok, results=res))
    panel.progress.valueChanged.connect(progress.append)
    end = time.time() + seconds
    while "ok" not in done and time.time() < end:
        app.processEvents()
        if until is not None and until(progress):
            until = None
        time.sleep(0.02)
    panel.step_finished.disconnect()
    panel.progress.valueChanged.disconnect()
    return done.get("ok", False), done.get("results", {}), progress


def _points(path: Path, name: str):
    from qgis.core import QgsProject, QgsVectorLayer

    uri = f"file://{path}?delimiter=,&xField=x&yField=y&crs=EPSG:32717"
    layer = QgsVectorLayer(uri, name, "delimitedtext")
    QgsProject.instance().addMapLayer(layer)
    return layer


def _susceptibility_chain(app, panel, page) -> dict:
    """Blocks, training, prediction and evaluation, each filled by the step before."""
    ecuador = REPO / "tests" / "data" / "ecuador"
    training = _points(ecuador / "lsl.csv", "lsl")
    validation = _points(ecuador / "landslides.csv", "landslides")
    steps = {alg: page.step(alg) for alg in ("segmentblocks", "trainsusceptibility")}
    steps["segmentblocks"].set_value("INVENTORY", training.id())
    app.processEvents()
    steps["segmentblocks"].set_value("LABEL_FIELD", "lslpts")
    steps["segmentblocks"].set_value("N_BLOCKS", 16)
    chain: dict = {}
    steps["segmentblocks"].run_button.click()
    chain["segmentblocks"] = _wait(app, panel, 300)[0]
    train = steps["trainsusceptibility"]
    chain["train_inputs"] = {
        name: str(train.values().get(name, "")) for name in ("INPUT", "BLOCKS", "INVENTORY")
    }
    chain["train_label"] = train.values().get("LABEL_FIELD", "")
    train.set_value("ITERATIONS_META", 100)
    train.set_value("CV_FOLDS", 0)
    train.run_button.click()
    ok, results, _ = _wait(app, panel, 600)
    chain["train"], chain["model"] = ok, results.get("OUTPUT", "")
    predict = page.step("predictsusceptibility")
    chain["predict_model"] = predict.values().get("MODEL", "")
    predict.run_button.click()
    chain["predict"] = _wait(app, panel, 300)[0]
    evaluate = page.step("evaluatesusceptibility")
    chain["evaluate_inputs"] = {
        name: str(evaluate.values().get(name, "")) for name in ("INPUT", "CLASSED", "TRAINING")
    }
    evaluate.set_value("INVENTORY", validation.id())
    app.processEvents()
    evaluate.set_value("LABEL_FIELD", "lslpts")
    evaluate.run_button.click()
    ok, results, _ = _wait(app, panel, 300)
    chain["evaluate"], chain["report"] = ok, results.get("OUTPUT", "")
    run = panel.runs["susceptibility"]
    from qgis.core import QgsProject

    group = QgsProject.instance().layerTreeRoot().findGroup(run.group_name)
    chain["layers"] = _group_layers(group) if group else []
    return chain


def _group_layers(group) -> list[str]:
    return [child.layer().name() for child in group.findLayers()]


def _shot(widget, name: str, shots: list[str], canvas=None) -> None:
    from qgis.PyQt.QtWidgets import QApplication

    if canvas is not None:
        canvas.refreshAllLayers()
        for _ in range(50):
            QApplication.processEvents()
            time.sleep(0.05)
        canvas.waitWhileRendering()
        QApplication.processEvents()
    IMAGES.mkdir(parents=True, exist_ok=True)
    image = widget.grab().toImage()
    if image.width() > 1100:  # whole windows: small enough for the README (256 colours)
        from qgis.PyQt.QtCore import Qt
        from qgis.PyQt.QtGui import QImage

        image = image.scaledToWidth(1100, Qt.SmoothTransformation)
        image = image.convertToFormat(QImage.Format_Indexed8, Qt.DiffuseDither)
    image.save(str(IMAGES / name))
    shots.append(name)


class _DesktopIface(_Iface):
    """The stand-in with the menu, toolbar and dock calls the plugin makes."""

    def __init__(self, window, canvas, bar) -> None:
        super().__init__(window, canvas, bar)
        self.menu: list[str] = []
        self.toolbar: list[str] = []
        self.docks: list = []

    def addPluginToMenu(self, menu, action):
        self.menu.append(action.text())

    def removePluginMenu(self, menu, action):
        self.menu.remove(action.text())

    def addToolBarIcon(self, action):
        self.toolbar.append(action.text())

    def removeToolBarIcon(self, action):
        self.toolbar.remove(action.text())

    def addDockWidget(self, area, dock):
        self.window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock):
        self.window.removeDockWidget(dock)
        self.docks.remove(dock)


def _plugin_menu(window, canvas, bar) -> dict:
    """The plugin's toolbar button and menu; the Mapping entry opens the panel's tab."""
    from slidewise.plugin import SlidewisePlugin

    iface = _DesktopIface(window, canvas, bar)
    plugin = SlidewisePlugin(iface)
    plugin.provider = object()  # Processing is set up already: skip a second provider
    plugin.initGui()
    menu = list(iface.menu)
    [mapping] = [a for a in plugin.actions if a.text() == "Mapping…"]
    mapping.trigger()
    tab = plugin.panel.tabs.tabText(plugin.panel.tabs.currentIndex())
    checked = plugin.toolbar_action.isChecked()
    toolbar = list(iface.toolbar)
    plugin.provider = None
    plugin.unload()
    return {
        "menu": menu,
        "toolbar": toolbar,
        "tab": tab,
        "button_checked": checked,
        "left_after_unload": iface.menu + iface.toolbar + iface.docks,
    }


def _window(app):
    from qgis.core import QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow, QVBoxLayout, QWidget

    window = QMainWindow()
    window.setWindowTitle("QGIS: Slidewise")
    central = QWidget()
    layout = QVBoxLayout(central)
    bar = QgsMessageBar()
    canvas = QgsMapCanvas()
    layout.addWidget(bar)
    layout.addWidget(canvas)
    window.setCentralWidget(central)
    root = QgsProject.instance().layerTreeRoot()
    window.bridge = QgsLayerTreeMapCanvasBridge(root, canvas)
    view = QgsLayerTreeView()
    model = QgsLayerTreeModel(root)
    model.setFlag(QgsLayerTreeModel.AllowNodeChangeVisibility)
    view.setModel(model)
    window.tree_model = model
    tree = QDockWidget("Layers")
    tree.setWidget(view)
    window.addDockWidget(Qt.LeftDockWidgetArea, tree)
    window.resize(1500, 950)
    return window, canvas, bar, view


def _after_restart(window, canvas, bar) -> dict:
    """A new panel on the same project (as after restarting QGIS) lists the earlier results."""
    from qgis.PyQt.QtCore import Qt

    from slidewise.ui.panel.dock import SlidewisePanel

    panel = SlidewisePanel(_Iface(window, canvas, bar), window)
    panel.results.refresh()
    models = panel.results.models
    reports = panel.results.reports
    listed = {
        "models": [models.item(i).data(Qt.UserRole) for i in range(models.count())],
        "reports": [reports.item(i).data(Qt.UserRole) for i in range(reports.count())],
    }
    panel.deleteLater()
    return listed


def _scroll_to(widget) -> None:
    """Scroll the panel's tab so that ``widget`` (a step) shows from its title down."""
    from qgis.PyQt.QtWidgets import QScrollArea

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.verticalScrollBar().setValue(widget.y())


def _scenes_step(app, panel, out: Path, shots: list[str]) -> dict:
    """Map many scenes: the step's widgets, then two overlapping scenes of a footprint layer.

    The scenes are mapped with the model trained above (chained from Train), run twice in
    the same run: the second run adds to the same inventory and skips both scenes.
    """
    from plugin_helpers import two_scene_footprints
    from qgis.core import QgsProject, QgsVectorLayer
    from qgis.PyQt.QtWidgets import QLineEdit

    started = time.time()
    mapping = panel.pages["mapping"]
    for widget in mapping.steps:
        widget.setCollapsed(True)
    step = mapping.step("mapscenes")
    step.setCollapsed(False)
    model_edits = step.wrappers["MODEL"].wrappedWidget().findChildren(QLineEdit)
    found: dict = {
        "title": step.title(),
        "widgets": list(step.wrappers),
        "tooltips": {n: w.wrappedWidget().toolTip() for n, w in step.wrappers.items()},
        "advanced": list(step.advanced_names),
        "model_placeholder": model_edits[0].placeholderText() if model_edits else "",
        "model": step.values().get("MODEL", ""),
        "runs": [],
    }
    folder = out / "scenes"
    folder.mkdir()
    footprints = QgsVectorLayer(str(two_scene_footprints(folder)), "scene footprints", "ogr")
    QgsProject.instance().addMapLayer(footprints)
    step.set_value("FOOTPRINTS", footprints.id())
    app.processEvents()
    step.set_value("THRESHOLD", 0.01)  # a one-epoch model: polygons to merge
    step.set_value("TILE_SIZE", 256)
    for _ in range(2):
        step.run_button.click()
        ok, results, progress = _wait(app, panel, 600)
        group = QgsProject.instance().layerTreeRoot().findGroup(panel.runs["mapping"].group_name)
        in_group = [n.layer() for n in (group.findLayers() if group else [])]
        nodes = [lyr for lyr in in_group if "inventory" in lyr.source()]
        layer = nodes[0] if nodes else None
        mapped = [lyr.renderer().type() for lyr in in_group if lyr.name() == "Landslide polygons"]
        found["runs"].append(
            {
                "ok": ok,
                "mapped": results.get("SCENES_MAPPED"),
                "skipped": results.get("SCENES_SKIPPED"),
                "polygons": results.get("INVENTORY_POLYGONS"),
                "merged": results.get("POLYGONS_MERGED"),
                "layers": [lyr.name() for lyr in nodes],
                "source": layer.source() if layer else "",
                "features": layer.featureCount() if layer else -1,
                "renderer": layer.renderer().type() if layer else "",
                "polygon_renderer": mapped[0] if mapped else "none",
                "progress": progress,
            }
        )
    found["seconds"] = round(time.time() - started, 1)  # its share of the test's time
    panel.show_workflow("mapping")
    _scroll_to(step)
    app.processEvents()
    _shot(panel, "panel_mapscenes.png", shots)
    return found


def main(out: Path) -> None:
    import faulthandler

    faulthandler.enable(all_threads=True)  # a crash of QGIS says where, in the test's log
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], True)
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from qgis.PyQt.QtCore import Qt

    from slidewise.processing_provider.provider import SlidewiseProvider
    from slidewise.ui.panel.dock import SlidewisePanel
    from slidewise.ui.panel.layers import RANK_PROPERTY

    provider = SlidewiseProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    project_dir = out / "project"
    project_dir.mkdir()
    QgsProject.instance().setFileName(str(project_dir / "demo.qgz"))
    window, canvas, bar, view = _window(app)
    panel = SlidewisePanel(_Iface(window, canvas, bar), window)
    window.addDockWidget(Qt.RightDockWidgetArea, panel)
    window.resizeDocks([panel], [440], Qt.Horizontal)
    window.show()
    app.processEvents()
    result: dict = {"screenshots": []}
    shots = result["screenshots"]

    # 1. terrain factors on the DEM
    dem = QgsRasterLayer(str(DEM), "dem_10m")
    QgsProject.instance().addMapLayer(dem)
    canvas.setExtent(dem.extent())
    page = panel.pages["susceptibility"]
    terrain = page.step("terrainfactors")
    terrain.set_value("INPUT", dem.id())
    terrain.run_button.click()
    ok, results, progress = _wait(app, panel, 300)
    run = panel.runs["susceptibility"]
    group = QgsProject.instance().layerTreeRoot().findGroup(run.group_name)
    layers = _group_layers(group) if group else []
    first = group.findLayers()[0].layer() if group else None
    result["terrain"] = {
        "ok": ok,
        "output": results.get("OUTPUT", ""),
        "group": run.group_name,
        "layers": layers,
        "renderers": [first.renderer().type()] if first else [],
        "styled": bool(first and first.customProperty(RANK_PROPERTY) is not None),
        "progress": progress,
        "next_inputs": {
            alg: page.step(alg).values().get("INPUT")
            for alg in ("segmentblocks", "trainsusceptibility")
        },
    }
    page.step("segmentblocks").setCollapsed(False)
    app.processEvents()
    _shot(window, "panel_desktop_terrain.png", shots, canvas)
    _shot(panel, "panel_susceptibility.png", shots)

    result["chain"] = _susceptibility_chain(app, panel, page)
    root = QgsProject.instance().layerTreeRoot()
    for name in ("lsl", "landslides"):  # the points would hide the map in the screenshot
        for node in root.findLayers():
            if node.layer().name() == name:
                node.setItemVisibilityChecked(False)
    view.expandAll()
    _shot(window, "panel_desktop_susceptibility.png", shots, canvas)

    # 2. cancel a run: a long training, cancelled once it has started
    before = {p for p in out.rglob("*") if p.is_file()}
    mapping = panel.pages["mapping"]
    train = mapping.step("trainmapping")
    panel.show_workflow("mapping")
    for name, value in {
        "TRAIN_IMAGES": str(BIJIE / "train" / "images"),
        "TRAIN_MASKS": str(BIJIE / "train" / "masks"),
        "MASK_COLOR": "255,255,0",
        "ENCODER": "resnet18",
        "ENCODER_DEPTH": 3,
        "EPOCHS": 50,
        "CHIP_SIZE": 128,
        "BATCH_SIZE": 4,
    }.items():
        train.set_value(name, value)
    train.run_button.click()
    started = time.time()

    def cancel_when_running(progress: list[float]) -> bool:
        if time.time() - started > 8:
            panel.cancel_button.click()
            return True
        return False

    ok, results, _ = _wait(app, panel, 300, until=cancel_when_running)
    cancel_output = panel.runs["mapping"].outputs_set["trainmapping"]["OUTPUT"]
    after = {p for p in out.rglob("*") if p.is_file()}
    new_files = sorted(str(p) for p in after - before if "profile" not in p.parts)
    result["cancel"] = {
        "ok": ok,
        "status": train.status.text(),
        "output": cancel_output,
        "output_exists": Path(cancel_output).exists(),
        "new_files": new_files,
        "mapping_group": QgsProject.instance()
        .layerTreeRoot()
        .findGroup(panel.runs["mapping"].group_name)
        is not None,
        "run_folder": panel.runs["mapping"].folder.exists(),
    }
    _shot(panel, "panel_cancelled.png", shots)

    # 3. train a mapping model for one epoch, then map a test image with it
    train.set_value("EPOCHS", 1)
    train.run_button.click()
    ok, results, _ = _wait(app, panel, 900)
    model = results.get("OUTPUT", "")
    map_step = mapping.step("maplandslides")
    from slidewise.ui.model_card import card_sections, read_model_metadata, show_model_card

    card_task = ""
    if model:
        card_task = dict(card_sections(read_model_metadata(model))[0][1]).get("Task", "")
        card = show_model_card(model)
        card.resize(560, 620)
        app.processEvents()
        _shot(card, "panel_model_card.png", shots)
        card.close()
    result["train"] = {
        "ok": ok,
        "model": model,
        "map_model_input": map_step.values().get("MODEL", ""),
        "card_task": card_task,
    }
    image_path = sorted((BIJIE / "test" / "images").glob("*.png"))[0]
    image = QgsRasterLayer(str(image_path), image_path.stem)
    QgsProject.instance().addMapLayer(image)
    canvas.setExtent(image.extent())
    map_step.set_value("INPUT", image.id())
    # A one-epoch model is unsure everywhere: a low threshold makes sure the polygon layer
    # has features whose extent the overlay test can compare with the image's.
    map_step.set_value("THRESHOLD", 0.01)
    map_step.run_button.click()
    ok, results, _ = _wait(app, panel, 600)
    group = QgsProject.instance().layerTreeRoot().findGroup(panel.runs["mapping"].group_name)
    nodes = group.findLayers() if group else []
    result["map"] = {
        "ok": ok,
        "layers": [n.layer().name() for n in nodes],
        "opacity": {
            n.layer().name(): n.layer().renderer().opacity()
            for n in nodes
            if n.layer().type() == n.layer().RasterLayer
        },
        "visible": {n.layer().name(): n.isVisible() for n in nodes},
        "evaluate_input": mapping.step("evaluatemapping").values().get("INPUT", ""),
        "extents": {n.layer().name(): n.layer().extent().toString(1) for n in nodes},
        "image_extent": image.extent().toString(1),
    }
    view.expandAll()
    _shot(window, "panel_desktop_mapping.png", shots, canvas)
    canvas.zoomByFactor(0.5)
    aoi = QgsVectorLayer(panel.canvas_aoi(image.id(), panel.runs["mapping"]), "aoi", "ogr")
    result["map"]["canvas_aoi"] = {
        "features": aoi.featureCount(),
        "aoi": [aoi.extent().xMinimum(), aoi.extent().yMaximum()],
        "canvas": [canvas.extent().xMinimum(), canvas.extent().yMaximum()],
    }
    evaluate_step = mapping.step("evaluatemapping")
    evaluate_step.setCollapsed(True)
    map_step.setCollapsed(False)
    app.processEvents()
    _shot(panel, "panel_mapping.png", shots)
    map_step.setCollapsed(True)
    evaluate_step.setCollapsed(False)

    # 4. evaluate the map against the image's mask: the report opens in QGIS
    evaluate = mapping.step("evaluatemapping")
    evaluate.set_value("REFERENCE", str(BIJIE / "test" / "masks" / image_path.name))
    evaluate.set_value("LANDSLIDE_VALUES", "255")  # the masks' landslide value, as in the demo
    evaluate.run_button.click()
    ok, results, _ = _wait(app, panel, 300)
    viewers = panel.results.dialogs
    result["report"] = {
        "ok": ok,
        "listed": panel.results.reports.count() > 0,
        "viewer": viewers[-1].engine if viewers else "",
    }
    if viewers:
        viewers[-1].resize(900, 700)
        app.processEvents()
        time.sleep(1)
        app.processEvents()
        _shot(viewers[-1], "panel_report.png", shots)
    # 5. map many scenes into one inventory with the trained model
    result["scenes"] = _scenes_step(app, panel, out, shots)
    panel.show_workflow("results")
    app.processEvents()
    _shot(panel, "panel_results.png", shots)
    result["restart"] = _after_restart(window, canvas, bar)
    result["plugin"] = _plugin_menu(window, canvas, bar)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    QgsApplication.processingRegistry().removeProvider(provider)
    sys.stdout.flush()
    os._exit(0)  # leave without QGIS's teardown, which can crash after a GUI session


if __name__ == "__main__":
    main(Path(sys.argv[1]))
