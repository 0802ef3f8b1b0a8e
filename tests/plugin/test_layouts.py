"""slidewise:exportlayout through qgis_process, and the panel's "Print layout…" button under Xvfb.

Data: the Ecuador DEM and factor stack of tests/data; the susceptibility classes are
quintiles of the slope factor and the landslides 25 m discs around the 175 landslide
points of lsl.csv (a stand-in for Predict susceptibility and Map landslides outputs).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_helpers import run_qgis_process

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ECUADOR = REPO / "tests" / "data" / "ecuador"
IMAGES = REPO / "docs" / "images"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classed susceptibility stand-in (uint8 1..5) and landslide polygons (GeoPackage)."""
    import numpy as np
    from osgeo import gdal, ogr, osr

    out = tmp_path_factory.mktemp("layout-data")
    stack = gdal.Open(str(ECUADOR / "ta.tif"))
    slope = stack.GetRasterBand(1).ReadAsArray().astype(float)
    valid = np.isfinite(slope)
    edges = np.quantile(slope[valid], [0.2, 0.4, 0.6, 0.8])
    classes = np.where(valid, np.searchsorted(edges, slope) + 1, 0).astype(np.uint8)
    driver = gdal.GetDriverByName("GTiff")
    raster = driver.Create(str(out / "classes.tif"), stack.RasterXSize, stack.RasterYSize, 1, 1)
    raster.SetGeoTransform(stack.GetGeoTransform())
    raster.SetProjection(stack.GetProjection())
    raster.GetRasterBand(1).WriteArray(classes)
    raster.GetRasterBand(1).SetNoDataValue(0)
    raster = None
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32717)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(out / "landslides.gpkg"))
    layer = source.CreateLayer("landslides", srs, ogr.wkbPolygon)
    with open(ECUADOR / "lsl.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["lslpts"].lower() in ("1", "true"):
                point = ogr.CreateGeometryFromWkt(f"POINT ({row['x']} {row['y']})")
                feature = ogr.Feature(layer.GetLayerDefn())
                feature.SetGeometry(point.Buffer(25, 8))
                layer.CreateFeature(feature)
    source = None
    return {"classes": out / "classes.tif", "landslides": out / "landslides.gpkg", "dir": out}


def pdf_pages(data: bytes) -> int:
    """The page count of the last page tree (QGIS appends its metadata as an update)."""
    counts = re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data, flags=re.S)
    counts += re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data, flags=re.S)
    assert counts, "no page tree in the PDF"
    return int(counts[-1])


def export(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return run_qgis_process(
        env, "run", "slidewise:exportlayout", "--json", "--", *args, timeout=240
    )


def test_susceptibility_and_inventory_layouts_export_pdfs(qgis_process_env: dict, demo) -> None:
    title = "Ecuador test map: susceptibility"
    pdf = demo["dir"] / "susceptibility.pdf"
    done = export(
        qgis_process_env,
        "TEMPLATE=0",
        f"SUSCEPTIBILITY={demo['classes']}",
        f"LANDSLIDES={demo['landslides']}",
        f"TITLE={title}",
        f"OUTPUT={pdf}",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["results"]["OUTPUT"] == str(pdf)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000
    assert pdf_pages(data) == 1
    assert f"/Title ({title})".encode() in data  # the layout's title, in the PDF's metadata


def test_inventory_layout_in_process(qgis_app, demo) -> None:
    import processing

    inventory = demo["dir"] / "inventory.pdf"
    processing.run(
        "slidewise:exportlayout",
        {
            "TEMPLATE": 1,
            "LANDSLIDES": str(demo["landslides"]),
            "BACKGROUND": str(ECUADOR / "dem_10m.tif"),
            "OUTPUT": str(inventory),
        },
    )
    data = inventory.read_bytes()
    assert pdf_pages(data) == 1 and len(data) > 20_000
    assert b"/Title (Landslide inventory map)" in data


def test_missing_layer_is_refused_with_the_fix(qgis_app, demo) -> None:
    import processing
    from qgis.core import QgsProcessingException

    pdf = demo["dir"] / "none.pdf"
    with pytest.raises(QgsProcessingException, match="needs SUSCEPTIBILITY"):
        processing.run("slidewise:exportlayout", {"TEMPLATE": 0, "OUTPUT": str(pdf)})
    with pytest.raises(QgsProcessingException, match="needs LANDSLIDES"):
        processing.run(
            "slidewise:exportlayout",
            {"TEMPLATE": 1, "SUSCEPTIBILITY": str(demo["classes"]), "OUTPUT": str(pdf)},
        )
    assert not pdf.exists()


# --- the panel button, in a GUI QgsApplication under Xvfb ------------------------------------
def test_panel_button_opens_the_layout_dialog(tmp_path: Path) -> None:
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb)")
    from plugin_helpers import PLUGINS_DIR

    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "profile")
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x900x24", sys.executable, __file__, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    result_file = tmp_path / "result.json"
    assert result_file.is_file(), proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert "error" not in result, result.get("error")
    assert result["susceptibility"] == {"algorithm": "slidewise:exportlayout", "template": 0}
    assert result["mapping"] == {"algorithm": "slidewise:exportlayout", "template": 1}
    assert result["visible"] and not result["detection_button"]


def _dialog_state(dialog) -> dict:
    try:
        values = dialog.getParameterValues()
    except AttributeError:  # QGIS >= 3.30 names it createProcessingParameters
        values = dialog.createProcessingParameters()
    return {"algorithm": dialog.algorithm().id(), "template": values["TEMPLATE"]}


def main(out: Path) -> None:
    """The script side: a panel in a window, each tab's button clicked, the dialog inspected."""
    import traceback

    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from qgis.PyQt.QtWidgets import QMainWindow, QPushButton

    from slidewise.processing_provider.provider import SlidewiseProvider
    from slidewise.ui.panel.dock import SlidewisePanel

    provider = SlidewiseProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    result: dict = {}
    try:
        window = QMainWindow()
        panel = SlidewisePanel(None, window)
        window.setCentralWidget(panel)
        window.resize(500, 800)
        window.show()
        for key in ("susceptibility", "mapping"):
            panel.show_workflow(key)
            panel.findChild(QPushButton, f"layout_{key}").click()
            app.processEvents()
            dialog = panel.layout_dialog
            result[key] = _dialog_state(dialog)
            result["visible"] = dialog.isVisible()
            if key == "susceptibility" and IMAGES.is_dir():
                dialog.resize(900, 700)
                app.processEvents()
                dialog.grab().save(str(IMAGES / "layout_dialog.png"))
            dialog.close()
        result["detection_button"] = panel.findChild(QPushButton, "layout_detection") is not None
    except Exception:
        result["error"] = traceback.format_exc()
    (out / "result.json").write_text(json.dumps(result))
    app.exitQgis()


if __name__ == "__main__":
    main(Path(sys.argv[1]))


def test_templates_hold_every_item_and_outlive_their_project(qgis_app, demo, tmp_path) -> None:
    """Both templates have the items the algorithm fills; a layout keeps its project alive."""
    import gc

    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

    from slidewise.processing_provider import layouts

    ids = {"map", "legend", "scalebar", "north", "title", "date", "sources", "method"}
    for template in layouts.TEMPLATES:
        layout = layouts.load_template(QgsProject(), template)
        assert {item.id() for item in layout.items() if hasattr(item, "id")} >= ids, template
    content = layouts.LayoutContent(
        "susceptibility",
        [QgsVectorLayer(str(demo["landslides"]), "s"), QgsRasterLayer(str(demo["classes"]), "c")],
        title="Kept alive",
    )
    layout = layouts.fill_layout(QgsProject(), content)  # nobody else holds the project
    gc.collect()
    layouts.export_pdf(layout, str(tmp_path / "alive.pdf"))
    assert pdf_pages((tmp_path / "alive.pdf").read_bytes()) == 1
