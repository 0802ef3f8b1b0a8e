"""slidewise:detectlandslides — landslide boxes on a raster, from a detector or a map."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.options import Option, add_options, option_params

SOURCES = ("detector", "segmentation")

DETECT_OPTIONS = (
    Option(
        "MODEL",
        "Model file",
        "file",
        "A detection model (Train detection model) for source detector, or a mapping model "
        "(Train mapping model) for source segmentation.",
        file_filter="Slidewise model (*.safetensors)",
        advanced=False,
    ),
    Option(
        "SOURCE",
        "Boxes from",
        "choice",
        "detector: Faster R-CNN on overlapping tiles; segmentation: boxes around the "
        "connected components of a mapping model's output, to compare both routes.",
        choices=SOURCES,
        advanced=False,
    ),
    Option(
        "BANDS",
        "Bands",
        "text",
        "Raster bands fed to the model in its order (1-based numbers or band names); empty: "
        "the raster's bands, checked against the model's.",
    ),
    Option(
        "TILE_SIZE",
        "Tile size (pixels)",
        "int",
        "Tile side; empty: the detector's training image side (segmentation: as in Map "
        "landslides).",
        minimum=32,
    ),
    Option(
        "OVERLAP",
        "Tile overlap (pixels)",
        "int",
        "Overlap of neighbouring tiles; objects smaller than it are always seen whole by one "
        "tile; empty: 64.",
    ),
    Option(
        "SCORE_THRESHOLD",
        "Minimum score",
        "float",
        "Boxes scoring lower are dropped; empty: 0.5 for the detector, 0 for segmentation.",
        maximum=1.0,
    ),
    Option(
        "NMS_IOU",
        "NMS IoU",
        "float",
        "IoU above which the lower-scoring of two boxes is removed (one NMS over all tiles, "
        "so boxes cut by tile borders are merged); empty: 0.5.",
        maximum=1.0,
    ),
    Option(
        "THRESHOLD",
        "Probability threshold (segmentation)",
        "float",
        "Pixel probability for landslide; empty: the mapping model's stored threshold (0.5 "
        "for a probability raster).",
        maximum=1.0,
    ),
    Option(
        "MIN_AREA",
        "Minimum component (pixels, segmentation)",
        "int",
        "Smallest landslide component that becomes a box; empty: 16.",
    ),
    Option(
        "BATCH_SIZE",
        "Batch size",
        "int",
        "Tiles per forward pass; empty: 1 on CPU, 4 on GPU.",
        minimum=1,
    ),
)


class DetectLandslidesAlgorithm(SlidewiseAlgorithm):
    """Tiled, georeferenced detection with NMS across tile borders."""

    ALG_ID = "detectlandslides"
    DISPLAY_NAME = "Detect landslides"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "detectlandslides"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Finds landslides as objects on a georeferenced raster of any size and writes their "
        "boxes as polygons with score, class and area. With a detector the raster is read in "
        "overlapping tiles and one non-maximum suppression over all tiles (in map "
        "coordinates) removes duplicates at tile borders. With a mapping model (or an "
        "existing probability raster) the boxes enclose the connected components of the "
        "landslide map, scored by their mean probability, so both routes can be compared on "
        "the same scene."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterRasterLayer("INPUT", tr("Image"), optional=True),
            "Georeferenced raster with the model's bands (not needed with a probability raster).",
        )
        add_options(self, DETECT_OPTIONS)
        self.add(
            QgsProcessingParameterRasterLayer(
                "PROBABILITY", tr("Probability raster (segmentation)"), optional=True
            ),
            "Source segmentation: an existing landslide probability raster (from Map "
            "landslides) used instead of a model.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterVectorDestination(
                "OUTPUT", tr("Landslide boxes"), QgsProcessing.TypeVectorPolygon
            ),
            "Box polygons (GeoPackage recommended) with score, class and area.",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        params = {**option_params(self, parameters, context, DETECT_OPTIONS), "OUTPUT": output}
        if parameters.get("INPUT"):
            params["INPUT"] = self.raster_path(parameters, "INPUT", context, tr("image"))
        if parameters.get("PROBABILITY"):
            params["PROBABILITY"] = self.raster_path(
                parameters, "PROBABILITY", context, tr("probability raster")
            )
        if "PROBABILITY" not in params and not ("INPUT" in params and "MODEL" in params):
            raise QgsProcessingException(
                tr("Give an image and a model file, or (source segmentation) a probability raster.")
            )
        return params, [output]

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "detection_boxes.qml", context)
