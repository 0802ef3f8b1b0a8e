"""slidewise:detectlandslides — landslide boxes on a raster, from a detector or a map."""

from __future__ import annotations

from qgis.core import QgsProcessingException

from slidewise.contract.specs.detectlandslides import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class DetectLandslidesAlgorithm(SlidewiseAlgorithm):
    """Tiled, georeferenced detection with NMS across tile borders."""

    ALG_ID = "detectlandslides"
    DISPLAY_NAME = "Detect landslides"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "detectlandslides"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Finds landslides as objects on a georeferenced raster of any size and writes their "
        "boxes as polygons with score, class and area. With a detector the raster is read in "
        "overlapping tiles and one non-maximum suppression over all tiles (in map "
        "coordinates) removes duplicates at tile borders. With a mapping model (or an "
        "existing probability raster) the boxes enclose the connected components of the "
        "landslide map after opening, closing and a minimum area (in m², as in Map "
        "landslides), boxes that nest or overlap are merged, and each is scored by the mean "
        "probability of its pixels, so both routes can be compared on the same scene."
    )

    def job_parameters(self, parameters, context, feedback):
        """SPEC's parameters; an image and a model, or a probability raster, are needed."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        if "PROBABILITY" not in params and not ("INPUT" in params and "MODEL" in params):
            raise QgsProcessingException(
                tr("Give an image and a model file, or (source segmentation) a probability raster.")
            )
        return params, outputs

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "detection_boxes.qml", context)
