"""slidewise:terrainfactors — terrain factors from a DEM."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

GEOGRAPHIC_OPTIONS = ["refuse", "degrees_to_metres"]


class TerrainFactorsAlgorithm(SlidewiseAlgorithm):
    """Slope, aspect, curvatures, hillshade and TWI as one multi-band GeoTIFF."""

    ALG_ID = "terrainfactors"
    DISPLAY_NAME = "Terrain factors from a DEM"
    GROUP = "preparation"
    ICON = "terrain.svg"
    JOB = "terrainfactors"
    SHORT_HELP = (
        "Computes slope (degrees), aspect (degrees clockwise from north, plus its sine and "
        "cosine), plan and profile curvature, hillshade and the topographic wetness index "
        "from a DEM, and writes them as one GeoTIFF whose bands carry these names. Slope "
        "and aspect use Horn's method, as gdaldem does. The DEM must be in a projected "
        "CRS; a DEM in degrees is refused unless you choose to convert degrees to metres."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterRasterLayer("INPUT", tr("DEM")),
            "Digital elevation model (band 1 is used), in a projected CRS.",
        )
        self.add(
            QgsProcessingParameterNumber(
                "Z_FACTOR",
                tr("Z factor"),
                QgsProcessingParameterNumber.Double,
                defaultValue=1.0,
                minValue=1e-9,
            ),
            "Multiplier that converts elevation units to the CRS's horizontal units.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "AZIMUTH",
                tr("Hillshade light azimuth"),
                QgsProcessingParameterNumber.Double,
                defaultValue=315.0,
                minValue=0.0,
                maxValue=360.0,
            ),
            "Direction of the light for the hillshade band, degrees clockwise from north.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "ALTITUDE",
                tr("Hillshade light altitude"),
                QgsProcessingParameterNumber.Double,
                defaultValue=45.0,
                minValue=0.0,
                maxValue=90.0,
            ),
            "Height of the light above the horizon for the hillshade band, in degrees.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterEnum(
                "GEOGRAPHIC",
                tr("DEM in a geographic CRS"),
                options=GEOGRAPHIC_OPTIONS,
                defaultValue=0,
            ),
            "What to do with a DEM in degrees: refuse (reproject it first, recommended) or "
            "convert degrees to metres row by row from the latitude.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "BLOCK_SIZE",
                tr("Block size (pixels)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=1024,
                minValue=64,
            ),
            "Side of the blocks the DEM is processed in; bounds the memory used.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterRasterDestination("OUTPUT", tr("Terrain factors")),
            "Multi-band GeoTIFF: slope, aspect, aspect_sin, aspect_cos, plan_curvature, "
            "profile_curvature, hillshade, twi.",
        )

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        params = {
            "INPUT": self.raster_path(parameters, "INPUT", context, tr("DEM")),
            "OUTPUT": output,
            "Z_FACTOR": self.parameterAsDouble(parameters, "Z_FACTOR", context),
            "AZIMUTH": self.parameterAsDouble(parameters, "AZIMUTH", context),
            "ALTITUDE": self.parameterAsDouble(parameters, "ALTITUDE", context),
            "GEOGRAPHIC": GEOGRAPHIC_OPTIONS[
                self.parameterAsEnum(parameters, "GEOGRAPHIC", context)
            ],
            "BLOCK_SIZE": self.parameterAsInt(parameters, "BLOCK_SIZE", context),
        }
        return params, [output]

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "terrain_factors.qml", context)
