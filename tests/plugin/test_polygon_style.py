"""The landslide polygon style shows the fields the engine writes (issue 12)."""

from __future__ import annotations

from pathlib import Path

from slidewise.contract.specs.polygons import POLYGON_FIELDS

STYLE = Path(__file__).resolve().parents[2] / "resources" / "styles" / "landslide_polygons.qml"


def test_polygon_style_colours_by_probability_and_names_every_field(qgis_app) -> None:
    from qgis.core import QgsVectorLayer

    types = {"id": "integer", "pixels": "integer"}
    fields = "&".join(f"field={f}:{types.get(f, 'double')}" for f in POLYGON_FIELDS)
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:32648&{fields}", "landslides", "memory")
    message, ok = layer.loadNamedStyle(str(STYLE))
    assert ok, message
    renderer = layer.renderer()
    assert renderer.type() == "graduatedSymbol"
    assert renderer.classAttribute() == "mean_probability"
    assert [r.lowerValue() for r in renderer.ranges()] == [0.0, 0.6, 0.8]
    names = layer.fields().names()
    assert all(layer.attributeAlias(names.index(f)) for f in POLYGON_FIELDS)
    assert layer.attributeAlias(names.index("area_m2")) == "Area (m²)"
    tip = layer.mapTipTemplate()
    assert all(f in tip for f in POLYGON_FIELDS if f != "pixels")
