"""slidewise:maplandslides — probability, mask and polygons from a mapping model."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class MapLandslidesAlgorithm(SlidewiseAlgorithm):
    """Seam-free tiled inference with bounded memory."""

    ALG_ID = "maplandslides"
    DISPLAY_NAME = "Map landslides"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "maplandslides"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Applies a mapping model to a whole raster of any size: overlapping tiles are read "
        "window by window (reflect padding at the raster borders, so borders are predicted), "
        "blended smoothly (no seams) and written window by window, so memory stays bounded. "
        "Writes the landslide probability, a mask at the threshold and landslide polygons "
        "with area and mean probability. The raster's bands must match the model's (count "
        "and names); a mismatch is refused with the expected bands named. A multi-region "
        "model maps with the decoder of the chosen region, or per area from region polygons."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterRasterLayer("INPUT", tr("Image")),
            "Raster to map, with the bands the model was trained on.",
        )
        self.add(
            QgsProcessingParameterFile(
                "MODEL", tr("Model file"), fileFilter="Slidewise model (*.safetensors)"
            ),
            "A model from Train mapping model.",
        )
        self.add(
            QgsProcessingParameterVectorLayer(
                "AOI", tr("Area of interest"), [QgsProcessing.TypeVectorPolygon], optional=True
            ),
            "Optional polygons; outside them every output is nodata.",
        )
        self.add(
            QgsProcessingParameterNumber(
                "THRESHOLD",
                tr("Threshold"),
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
                maxValue=1.0,
            ),
            "Probability at or above which a pixel is a landslide (mask and polygons); empty: "
            "the threshold stored in the model (tuned on validation in training; per region for "
            "multi-region models), else 0.5.",
        )
        self.add(
            QgsProcessingParameterString("REGION", tr("Region"), optional=True, defaultValue=""),
            "Multi-region models (Add region to mapping model): the region whose decoder maps "
            "the raster, or the pixels outside the region polygons. Empty: the only region, or "
            "the region polygons alone.",
        )
        self.add(
            QgsProcessingParameterVectorLayer(
                "REGION_POLYGONS",
                tr("Region polygons"),
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            ),
            "Multi-region models: polygons with a region attribute; each pixel inside is mapped "
            "by its polygon's region decoder (overlaps: the model's first region wins).",
        )
        self.add(
            QgsProcessingParameterField(
                "REGION_FIELD",
                tr("Region field"),
                defaultValue="region",
                parentLayerParameterName="REGION_POLYGONS",
                type=QgsProcessingParameterField.String,
                optional=True,
            ),
            "Attribute of the region polygons holding region names.",
        )
        self.add(
            QgsProcessingParameterNumber(
                "MIN_AREA",
                tr("Minimum polygon area (m²)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
            ),
            "Landslide polygons smaller than this are dropped (the mask keeps every pixel).",
        )
        self.add(
            QgsProcessingParameterString("BANDS", tr("Bands"), optional=True, defaultValue=""),
            "Raster bands that feed the model, in the model's order (1-based numbers or band "
            "names, e.g. 4,3,2,8); empty: the raster's bands, checked against the model's.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "TILE_SIZE",
                tr("Tile size (pixels)"),
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=32,
                maxValue=8192,
            ),
            "Tile side; empty: the model's training tile, at least 576 for fully convolutional "
            "models (U-Net and friends).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "OVERLAP",
                tr("Tile overlap (pixels)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=64,
                minValue=0,
                maxValue=4096,
            ),
            "Overlap of neighbouring tiles over which predictions are blended.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "BATCH_SIZE",
                tr("Batch size"),
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=1,
                maxValue=1024,
            ),
            "Tiles per forward pass; empty: 1 on CPU, 8 on GPU.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterBoolean("TTA", tr("Test-time augmentation"), defaultValue=False),
            "Average over the 8 flips and rotations (8 times slower, usually smoother).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_PROBABILITY", tr("Landslide probability"), optional=True
            ),
            "Float32 GeoTIFF, 0-1, NaN = nodata.",
        )
        self.add(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_MASK", tr("Landslide mask"), optional=True
            ),
            "Uint8 GeoTIFF: 1 = landslide, 0 = not landslide, 255 = nodata.",
        )
        self.add(
            QgsProcessingParameterVectorDestination(
                "OUTPUT_POLYGONS",
                tr("Landslide polygons"),
                QgsProcessing.TypeVectorPolygon,
                optional=True,
            ),
            "GeoPackage polygons with id, area_m2, pixels, mean_probability and max_probability.",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        outputs = {
            name: self.parameterAsOutputLayer(parameters, name, context) or ""
            for name in ("OUTPUT_PROBABILITY", "OUTPUT_MASK", "OUTPUT_POLYGONS")
        }
        if not any(outputs.values()):
            raise QgsProcessingException(
                tr("Choose at least one output: probability, mask or polygons.")
            )
        params: dict = {
            "INPUT": self.raster_path(parameters, "INPUT", context, tr("image")),
            "MODEL": self.parameterAsFile(parameters, "MODEL", context),
            "MIN_AREA": self.parameterAsDouble(parameters, "MIN_AREA", context),
            "OVERLAP": self.parameterAsInt(parameters, "OVERLAP", context),
            "TTA": self.parameterAsBool(parameters, "TTA", context),
            "BANDS": self.parameterAsString(parameters, "BANDS", context).strip(),
            **{k: v for k, v in outputs.items() if v},
        }
        for name in ("TILE_SIZE", "BATCH_SIZE"):
            if parameters.get(name) not in (None, ""):
                params[name] = self.parameterAsInt(parameters, name, context)
        if parameters.get("THRESHOLD") not in (None, ""):
            params["THRESHOLD"] = self.parameterAsDouble(parameters, "THRESHOLD", context)
        region = self.parameterAsString(parameters, "REGION", context).strip()
        if region:
            params["REGION"] = region
        region_layer = self.vector_path(parameters, "REGION_POLYGONS", context)
        if region_layer:
            params["REGION_POLYGONS"] = region_layer
            fields = self.parameterAsFields(parameters, "REGION_FIELD", context)
            params["REGION_FIELD"] = fields[0] if fields else "region"
        aoi = self.vector_path(parameters, "AOI", context)
        if aoi:
            params["AOI"] = aoi
        return params, [v for v in outputs.values() if v]

    def style_outputs(self, results, context) -> None:
        self.style_output(
            results.get("OUTPUT_PROBABILITY", ""), "landslide_probability.qml", context
        )
        self.style_output(results.get("OUTPUT_MASK", ""), "landslide_mask.qml", context)
        self.style_output(results.get("OUTPUT_POLYGONS", ""), "landslide_polygons.qml", context)
