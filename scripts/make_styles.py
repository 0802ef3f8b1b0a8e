"""Regenerate the QML styles in resources/styles with PyQGIS (a developer tool).

Run with Debian's Python: ``QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/make_styles.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsClassificationRange,
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor, QPainter

STYLES = Path(__file__).resolve().parents[1] / "resources" / "styles"


def _raster() -> QgsRasterLayer:
    import numpy as np
    from osgeo import gdal

    path = Path(tempfile.mkdtemp()) / "r.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 8, gdal.GDT_Float32)
    ds.SetGeoTransform([0, 1, 0, 4, 0, -1])
    for i in range(8):
        ds.GetRasterBand(i + 1).WriteArray(np.zeros((4, 4), dtype="float32"))
    ds = None
    return QgsRasterLayer(str(path), "r")


def pseudocolor(
    name: str, band: int, stops: list[tuple[float, str, str]], multiply: bool = False
) -> None:
    layer = _raster()
    if multiply:
        layer.setBlendMode(QPainter.CompositionMode_Multiply)
    ramp = QgsColorRampShader(stops[0][0], stops[-1][0])
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(
        [QgsColorRampShader.ColorRampItem(v, QColor(c), label) for v, c, label in stops]
    )
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)  # every stop with its label, not a bare 0-1 gradient
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(stops[0][0])
    renderer.setClassificationMax(stops[-1][0])
    layer.setRenderer(renderer)
    layer.saveNamedStyle(str(STYLES / name))


#: Fields of the landslide polygons (maplandslides) and their aliases.
POLYGON_ALIASES = {
    "id": "Id",
    "area_m2": "Area (m²)",
    "perimeter_m": "Perimeter (m)",
    "compactness": "Compactness (4πA/P², 1 = disc)",
    "pixels": "Landslide pixels",
    "mean_probability": "Mean probability",
    "max_probability": "Max probability",
    "mean_slope": "Mean slope (°)",
}


def landslide_polygons(name: str) -> None:
    """Polygons coloured by mean probability, with field aliases and a map tip of every field."""
    types = {"id": "integer", "pixels": "integer"}
    fields = "&".join(f"field={f}:{types.get(f, 'double')}" for f in POLYGON_ALIASES)
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:32648&{fields}", "landslides", "memory")
    ranges = []
    for lo, hi, label, rgb in (
        (0.0, 0.6, "Mean probability < 0.6", "254,204,92"),
        (0.6, 0.8, "0.6 - 0.8", "253,141,60"),
        (0.8, 1.0001, "0.8 - 1", "227,26,28"),
    ):
        symbol = QgsFillSymbol.createSimple(
            {
                "color": rgb + ",110",
                "outline_color": rgb + ",255",
                "outline_width": "0.5",
                "outline_width_unit": "MM",
                "joinstyle": "round",
            }
        )
        ranges.append(QgsRendererRange(QgsClassificationRange(label, lo, hi), symbol))
    layer.setRenderer(QgsGraduatedSymbolRenderer("mean_probability", ranges))
    for field, alias in POLYGON_ALIASES.items():
        layer.setFieldAlias(layer.fields().indexOf(field), alias)
    layer.setDisplayExpression("'Landslide ' || \"id\"")
    layer.setMapTipTemplate(
        '<b>Landslide [% "id" %]</b><br>'
        'Area: [% format_number("area_m2", 0) %] m²<br>'
        'Perimeter: [% format_number("perimeter_m", 0) %] m<br>'
        'Compactness: [% format_number("compactness", 2) %]<br>'
        'Probability: mean [% format_number("mean_probability", 2) %], '
        'max [% format_number("max_probability", 2) %]'
        "[% CASE WHEN \"mean_slope\" IS NOT NULL THEN '<br>Mean slope: ' || "
        "format_number(\"mean_slope\", 1) || '°' ELSE '' END %]"
    )
    layer.saveNamedStyle(str(STYLES / name))


def paletted(name: str, classes: list[tuple[int, str, str]], multiply: bool = False) -> None:
    """A classed raster; ``multiply`` blends it over the layers below (a hillshade shows)."""
    layer = _raster()
    if multiply:
        layer.setBlendMode(QPainter.CompositionMode_Multiply)
    items = [QgsPalettedRasterRenderer.Class(v, QColor(c), label) for v, c, label in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, items))
    layer.saveNamedStyle(str(STYLES / name))


def polygons(name: str, fill: str, outline: str, width: str = "0.5") -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857", "p", "memory")
    symbol = QgsFillSymbol.createSimple(
        {"color": fill, "outline_color": outline, "outline_width": width}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.saveNamedStyle(str(STYLES / name))


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    STYLES.mkdir(parents=True, exist_ok=True)
    pseudocolor(
        "terrain_factors.qml",
        1,
        [
            (0, "#1a9850", "0° flat"),
            (15, "#91cf60", "15°"),
            (30, "#fee08b", "30°"),
            (45, "#fc8d59", "45°"),
            (60, "#d73027", "60° and steeper"),
        ],
    )
    pseudocolor(
        "susceptibility_probability.qml",
        1,
        [
            (0.0, "#1a9641", "0 (least susceptible)"),
            (0.25, "#a6d96a", "0.25"),
            (0.5, "#ffffbf", "0.5"),
            (0.75, "#fdae61", "0.75"),
            (1.0, "#d7191c", "1 (most susceptible)"),
        ],
    )
    paletted(
        "susceptibility_classes.qml",
        [
            (1, "#1a9641", "Very low"),
            (2, "#a6d96a", "Low"),
            (3, "#ffffbf", "Moderate"),
            (4, "#fdae61", "High"),
            (5, "#d7191c", "Very high"),
        ],
        multiply=True,
    )
    pseudocolor(
        "landslide_probability.qml",
        1,
        [
            (0.0, "#00000000", "0"),
            (0.3, "#ffffb280", "0.3"),
            (0.5, "#fd8d3c", "0.5"),
            (1.0, "#bd0026", "1"),
        ],
    )
    paletted("landslide_mask.qml", [(0, "#00000000", "Not landslide"), (1, "#e31a1c", "Landslide")])
    pseudocolor(
        "susceptibility_uncertainty.qml",
        1,
        [
            (0.0, "#f7fcfd", "0 (the ensemble agrees)"),
            (0.05, "#bfd3e6", "0.05"),
            (0.1, "#8c96c6", "0.1"),
            (0.2, "#88419d", "0.2"),
            (0.3, "#4d004b", "0.3 and more (unsure)"),
        ],
        multiply=True,
    )
    pseudocolor(
        "landslide_uncertainty.qml",
        1,
        [
            (0.0, "#f7fcfd", "0 (the 8 flips and turns agree)"),
            (0.01, "#bfd3e6", "0.01"),
            (0.025, "#8c96c6", "0.025"),
            (0.05, "#88419d", "0.05"),
            (0.1, "#4d004b", "0.1 and more (unsure)"),
        ],
        multiply=True,
    )
    landslide_polygons("landslide_polygons.qml")
    polygons("blocks.qml", "0,0,0,0", "#37474f", "0.4")
    polygons("detection_boxes.qml", "0,0,0,0", "#ff00ff", "0.8")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
