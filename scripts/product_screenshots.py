"""Screenshots of Slidewise's products in the real QGIS desktop (a developer tool).

Run inside QGIS under Xvfb from the repository root, with the outputs named in ``SCENES``
in ``SLIDEWISE_SHOTS_DATA`` (``docs/products.md`` says how each was made)::

    SLIDEWISE_SHOTS_DATA=/tmp/products SLIDEWISE_SHOTS_OUT=/tmp/shots \\
        xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck \\
        --profiles-path /tmp/qgis-profile --code scripts/product_screenshots.py

``SLIDEWISE_SHOTS_SCENES="a b"`` makes only those scenes. The Bijie image and its reference
outline need the map's pixel grid (``gdal_translate -a_ullr 0 0 512 -720``, then
``gdal_polygonize.py`` for the mask). Every layer gets the style the plugin gives it
(``resources/styles``). One JPEG of the main window per scene (map, layers panel with the
legend) and one PNG of the map canvas alone; QGIS quits at the end.
"""

import os
import traceback
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface

DATA = Path(os.environ["SLIDEWISE_SHOTS_DATA"])
OUT = Path(os.environ["SLIDEWISE_SHOTS_OUT"])
# ``qgis --code`` execs the file without __file__: the repository is the working directory.
STYLES = Path(os.environ.get("SLIDEWISE_SHOTS_REPO", os.getcwd())) / "resources" / "styles"

#: scene name -> layers from bottom to top: (file, layer name, style or None, opacity).
SCENES = {
    "susceptibility_classes": [
        ("hillshade.tif", "Hillshade (10 m DEM)", None, 0.6),
        ("susceptibility_classes.tif", "Susceptibility classes", "susceptibility_classes.qml", 1.0),
        ("blocks.gpkg", "Terrain blocks", "blocks.qml", 1.0),
    ],
    "susceptibility_uncertainty": [
        ("hillshade.tif", "Hillshade (10 m DEM)", None, 0.6),
        ("susceptibility_uncertainty.tif", "Uncertainty", "susceptibility_uncertainty.qml", 1.0),
        ("blocks.gpkg", "Terrain blocks", "blocks.qml", 1.0),
    ],
    "probability_blend16": [
        (
            "susceptibility.tif",
            "Probability (BLEND_WIDTH 16)",
            "susceptibility_probability.qml",
            1.0,
        ),
    ],
    "probability_blend0": [
        (
            "susceptibility_w0.tif",
            "Probability (BLEND_WIDTH 0)",
            "susceptibility_probability.qml",
            1.0,
        ),
    ],
    "landslide_polygons": [
        ("image_10105.tif", "Bijie 10105 (RGB)", None, 1.0),
        ("landslide_polygons.gpkg", "Landslide polygons", "landslide_polygons.qml", 1.0),
        (
            'reference_10105.gpkg|layername=reference|subset="DN" = 255',
            "Reference outline",
            None,
            1.0,
        ),
    ],
    "landslide_polygons_off": [
        ("image_10105.tif", "Bijie 10105 (RGB)", None, 1.0),
        (
            "landslide_polygons_off.gpkg",
            "Landslide polygons (post-processing off)",
            "landslide_polygons.qml",
            1.0,
        ),
        (
            'reference_10105.gpkg|layername=reference|subset="DN" = 255',
            "Reference outline",
            None,
            1.0,
        ),
    ],
    "landslide_uncertainty": [
        (
            "landslide_uncertainty.tif",
            "Uncertainty (std of the 8 TTA members)",
            "landslide_uncertainty.qml",
            1.0,
        ),
        (
            'reference_10105.gpkg|layername=reference|subset="DN" = 255',
            "Reference outline",
            None,
            1.0,
        ),
    ],
}
_ONLY = os.environ.get("SLIDEWISE_SHOTS_SCENES", "").split()
state = {"queue": [s for s in SCENES if not _ONLY or s in _ONLY], "scene": None}


def add_layer(spec):
    name_in_folder, name, qml, opacity = spec
    path = str(DATA / name_in_folder)
    if name_in_folder.split("|")[0].endswith(".gpkg"):
        layer = QgsVectorLayer(path, name, "ogr")
    else:
        layer = QgsRasterLayer(path, name)
    if not layer.isValid():
        raise RuntimeError(f"cannot load {path}")
    if qml:
        layer.loadNamedStyle(str(STYLES / qml))
    elif isinstance(layer, QgsVectorLayer):  # the reference outline: dashed cyan, no fill
        symbol = layer.renderer().symbol()
        symbol.symbolLayer(0).setBrushStyle(0)
        symbol.symbolLayer(0).setStrokeColor(symbol.color().fromRgb(0, 229, 255))
        symbol.symbolLayer(0).setStrokeWidth(0.6)
        symbol.symbolLayer(0).setStrokeStyle(2)
    if hasattr(layer, "setOpacity"):
        layer.setOpacity(opacity)
    QgsProject.instance().addMapLayer(layer)
    return layer


def next_scene():
    try:
        if not state["queue"]:
            QApplication.instance().exit(0)
            return
        scene = state["queue"].pop(0)
        state["scene"] = scene
        QgsProject.instance().removeAllMapLayers()
        layers = [add_layer(spec) for spec in SCENES[scene]]
        canvas = iface.mapCanvas()
        canvas.setDestinationCrs(layers[0].crs())
        extent = layers[0].extent()
        extent.scale(1.04)
        canvas.setExtent(extent)
        canvas.refresh()
        # No block lines over the probability: they would hide the seams.
        # (A styled bottom layer is the product itself: its legend stays open.)
        styled = SCENES[scene][0][2] is not None
        state["background"] = layers[0].id() if len(layers) > 1 and not styled else None
        QTimer.singleShot(4000, grab)
    except Exception:
        (OUT / "error.txt").write_text(traceback.format_exc())
        QApplication.instance().exit(1)


def grab():
    iface.messageBar().clearWidgets()  # "no transform" notes of pixel-CRS images
    iface.layerTreeView().expandAll()  # the legends, but not the background's bands
    root = QgsProject.instance().layerTreeRoot()
    if state["background"]:
        root.findLayer(state["background"]).setExpanded(False)
    iface.mapCanvas().refresh()
    QTimer.singleShot(1500, save_shots)


def save_shots():
    scene = state["scene"]
    iface.mainWindow().grab().scaledToWidth(1200).save(str(OUT / f"{scene}.jpg"), "JPG", 85)
    iface.mapCanvas().grab().save(str(OUT / f"{scene}_canvas.png"))
    QTimer.singleShot(200, next_scene)


OUT.mkdir(parents=True, exist_ok=True)
iface.mainWindow().showMaximized()
for dock in ("Browser", "Browser2"):
    widget = iface.mainWindow().findChild(QDockWidget, dock)
    if widget is not None:
        widget.hide()
QTimer.singleShot(3000, next_scene)
