"""Predict susceptibility's UNCERTAINTY output and BLEND_WIDTH in the dialog, and its style."""

from __future__ import annotations

from pathlib import Path


def _algorithm():
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("slidewise:predictsusceptibility")
    assert alg is not None
    return alg


def _float_raster(path: Path) -> None:
    import numpy as np
    from osgeo import gdal

    ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 1, gdal.GDT_Float32)
    ds.SetGeoTransform([0, 10, 0, 80, 0, -10])
    ds.GetRasterBand(1).WriteArray(np.linspace(0, 0.4, 64, dtype="float32").reshape(8, 8))
    ds = None


def test_uncertainty_output_is_created_by_default_and_styled(qgis_app, tmp_path: Path) -> None:
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsRasterLayer,
    )

    alg = _algorithm()
    unc = alg.parameterDefinition("UNCERTAINTY")
    assert unc is not None and unc.createByDefault()
    blend = alg.parameterDefinition("BLEND_WIDTH")
    assert blend.defaultValue() == 2 and blend.minimum() == 0
    path = str(tmp_path / "uncertainty.tif")
    _float_raster(Path(path))
    context = QgsProcessingContext()
    context.addLayerToLoadOnCompletion(
        path, QgsProcessingContext.LayerDetails("uncertainty", QgsProject.instance(), "UNCERTAINTY")
    )
    alg.style_outputs({"UNCERTAINTY": path}, context)
    processor = context.layerToLoadOnCompletionDetails(path).postProcessor()
    assert processor is not None
    layer = QgsRasterLayer(path, "uncertainty")
    processor.postProcessLayer(layer, context, QgsProcessingFeedback())
    renderer = layer.renderer()
    # susceptibility_uncertainty.qml: light (agree) to dark purple (unsure) over 0-0.3.
    assert renderer.type() == "singlebandpseudocolor"
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [round(i.value, 2) for i in items] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert items[-1].color.name() == "#4d004b"
