"""slidewise:maplandslides — probability, mask and polygons from a mapping model."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterField,
)

from slidewise.contract.specs.maplandslides import OUTPUT_NAMES, SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class MapLandslidesAlgorithm(SlidewiseAlgorithm):
    """Seam-free tiled inference with bounded memory."""

    ALG_ID = "maplandslides"
    DISPLAY_NAME = "Map landslides"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "maplandslides"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Applies a mapping model to a whole raster of any size: overlapping tiles are read "
        "window by window (reflect padding at the raster borders, so borders are predicted), "
        "blended smoothly (no seams) and written window by window, so memory stays bounded. "
        "Writes the landslide probability, a mask at the threshold (by default chosen on the "
        "raster: the best expected F1 of a calibrated model's probabilities) and landslide "
        "polygons. "
        "The polygons are cleaned as a mapper would (defaults follow the pixel size): "
        "opening and closing, holes filled below a size, a minimum area, outlines simplified "
        "without overlaps; each has area_m2, perimeter_m, compactness, pixels, "
        "mean_probability, max_probability and, with a DEM, mean_slope. The raster's bands "
        "must match the model's (count and names); a mismatch is refused with the expected "
        "bands named. A multi-region model maps with the decoder of the chosen region, or "
        "per area from region polygons. Without a model file it maps with the landslide "
        "model shipped with Slidewise (RGB imagery; trained on Bijie and Sichuan, figures "
        "on its model card). Optionally writes the uncertainty of the probability: its "
        "standard deviation over the 8 flips and rotations of test-time augmentation "
        "(turns TTA on, 8 times slower)."
    )

    def initAlgorithm(self, config=None) -> None:
        """The parameters of ``SPEC``; region names are text fields, polygons are polygons."""
        super().initAlgorithm(config)
        self.parameterDefinition("REGION_FIELD").setDataType(QgsProcessingParameterField.String)
        self.parameterDefinition("OUTPUT_POLYGONS").setDataType(QgsProcessing.TypeVectorPolygon)

    def job_parameters(self, parameters, context, feedback):
        """The parameters set, refusing a run without any output."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        if not any(params.get(name) for name in OUTPUT_NAMES):
            raise QgsProcessingException(
                tr("Choose at least one output: probability, mask, polygons or uncertainty.")
            )
        return params, outputs

    def style_outputs(self, results, context) -> None:
        self.style_output(
            results.get("OUTPUT_PROBABILITY", ""), "landslide_probability.qml", context
        )
        self.style_output(results.get("OUTPUT_MASK", ""), "landslide_mask.qml", context)
        self.style_output(results.get("OUTPUT_POLYGONS", ""), "landslide_polygons.qml", context)
        self.style_output(
            results.get("OUTPUT_UNCERTAINTY", ""), "landslide_uncertainty.qml", context
        )
