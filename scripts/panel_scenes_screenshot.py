"""Screenshot of the panel's *Map many scenes* step in the real QGIS desktop (a developer tool).

Three overlapping georeferenced crops of a Bijie test image are mapped from a footprint
layer by the panel, with the shipped model (MODEL left empty), into one inventory; the
main window is then saved with the scenes, their footprints and the inventory on the map.
Run from the repository root, with the plugin enabled in a fresh profile::

    mkdir -p /tmp/shots/profiles/default/QGIS
    printf '[PythonPlugins]\\nslidewise=true\\n[qgis]\\nshowTips=false\\n' \\
        > /tmp/shots/profiles/default/QGIS/QGIS3.ini
    HOME=/tmp/shots QGIS_PLUGINPATH=$(dirname $PWD) SLIDEWISE_PYTHON=<engine python> \\
        SLIDEWISE_SHOTS_OUT=/tmp/shots/out xvfb-run -a -s "-screen 0 1600x1000x24" \\
        qgis --nologo --noversioncheck --profiles-path /tmp/shots/profiles \\
        --code scripts/panel_scenes_screenshot.py

It writes ``panel_desktop_mapscenes.png`` (the window, 1100 px wide, 256 colours, as the
other panel screenshots) and ``result.json`` to ``SLIDEWISE_SHOTS_OUT``; QGIS quits at the end.
"""

import json
import os
import time
import traceback
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QImage
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QScrollArea
from qgis.utils import iface, plugins

OUT = Path(os.environ["SLIDEWISE_SHOTS_OUT"])
# ``qgis --code`` execs the file without __file__: the repository is the working directory.
IMAGE = Path(os.getcwd()) / "tests" / "data" / "bijie" / "test" / "images" / "10105.png"
#: Scene name -> (first column of the 256 x 512 crop, acquisition date); 1 m pixels, UTM 48N.
SCENES = {
    "bijie_a": (0, "2020-08-01"),
    "bijie_b": (128, "2021-07-15"),
    "bijie_c": (256, "2022-06-30"),
}
found: dict = {}


def make_scenes(folder: Path) -> Path:
    """The crops as GeoTIFFs and a GeoJSON of their footprints (path, region, date)."""
    folder.mkdir(parents=True, exist_ok=True)
    features = []
    for name, (col, date) in SCENES.items():
        left, top = 430000.0 + col, 3019800.0
        gdal.Translate(
            str(folder / f"{name}.tif"),
            str(IMAGE),
            srcWin=[col, 100, 256, 512],
            outputSRS="EPSG:32648",
            outputBounds=[left, top, left + 256, top - 512],
        )
        ring = [[left, top], [left + 256, top], [left + 256, top - 512], [left, top - 512]]
        features.append(
            {
                "type": "Feature",
                "properties": {"path": f"{name}.tif", "region": "bijie", "date": date},
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            }
        )
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32648"}}
    path = folder / "footprints.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return path


def start():
    try:
        footprints_path = make_scenes(OUT / "scenes")
        root = QgsProject.instance().layerTreeRoot()
        scenes = root.addGroup("Scenes")
        for name in SCENES:
            layer = QgsRasterLayer(str(OUT / "scenes" / f"{name}.tif"), name)
            QgsProject.instance().addMapLayer(layer, False)
            scenes.addLayer(layer)
        footprints = QgsVectorLayer(str(footprints_path), "Scene footprints", "ogr")
        symbol = footprints.renderer().symbol().symbolLayer(0)
        symbol.setBrushStyle(Qt.NoBrush)
        symbol.setStrokeColor(symbol.strokeColor().fromRgb(255, 255, 255))
        symbol.setStrokeWidth(0.5)
        symbol.setStrokeStyle(Qt.DashLine)
        QgsProject.instance().addMapLayer(footprints)
        extent = footprints.extent()
        extent.scale(1.05)
        iface.mapCanvas().setDestinationCrs(footprints.crs())
        iface.mapCanvas().setExtent(extent)
        plugin = plugins["slidewise"]
        plugin.open_panel("mapping")
        panel = plugin.panel
        step = panel.pages["mapping"].step("mapscenes")
        for widget in panel.pages["mapping"].steps:
            widget.setCollapsed(widget is not step)
        step.set_value("FOOTPRINTS", footprints.id())
        QApplication.processEvents()
        panel.step_finished.connect(finished)
        found["started"] = time.time()
        step.run_button.click()
    except Exception:
        found["error"] = traceback.format_exc()
        finish()


def finished(alg: str, ok: bool, results: dict):
    found.update(alg=alg, ok=ok, results={k: str(v) for k, v in results.items()})
    found["seconds"] = round(time.time() - found["started"], 1)
    QTimer.singleShot(2000, grab)


def grab():
    try:
        panel = plugins["slidewise"].panel
        step = panel.pages["mapping"].step("mapscenes")
        parent = step.parentWidget()
        while parent is not None and not isinstance(parent, QScrollArea):
            parent = parent.parentWidget()
        if parent is not None:
            parent.verticalScrollBar().setValue(step.y())
        iface.messageBar().clearWidgets()
        iface.layerTreeView().expandAll()
        scenes = QgsProject.instance().layerTreeRoot().findGroup("Scenes")
        for node in scenes.findLayers():
            node.setExpanded(False)
        inventory = QgsProject.instance().mapLayersByName("Landslide inventory")
        if inventory:
            iface.setActiveLayer(inventory[0])
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(3000, save)
    except Exception:
        found["error"] = traceback.format_exc()
        finish()


def save():
    try:
        image = iface.mainWindow().grab().toImage()
        image = image.scaledToWidth(1100, Qt.SmoothTransformation)
        image = image.convertToFormat(QImage.Format_Indexed8, Qt.DiffuseDither)
        image.save(str(OUT / "panel_desktop_mapscenes.png"))
        found["log"] = plugins["slidewise"].panel.log.toPlainText()[-3000:]
    except Exception:
        found["error"] = traceback.format_exc()
    finish()


def finish():
    (OUT / "result.json").write_text(json.dumps(found, indent=1))
    QApplication.instance().exit(0)


OUT.mkdir(parents=True, exist_ok=True)
iface.mainWindow().showMaximized()
for dock in ("Browser", "Browser2"):
    widget = iface.mainWindow().findChild(QDockWidget, dock)
    if widget is not None:
        widget.hide()
QTimer.singleShot(4000, start)
