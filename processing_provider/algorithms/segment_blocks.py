"""slidewise:segmentblocks — terrain blocks (SLIC superpixels) of a factor stack."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.shared_parameters import (
    add_factor_stack,
    add_inventory,
    factor_stack_params,
    inventory_params,
)


def add_block_parameters(alg: SlidewiseAlgorithm, advanced: bool = False) -> None:
    """N_BLOCKS / COMPACTNESS / BANDS / WEIGHTS / ITERATIONS (shared with training)."""
    alg.add(
        QgsProcessingParameterNumber(
            "N_BLOCKS",
            tr("Number of blocks"),
            QgsProcessingParameterNumber.Integer,
            defaultValue=0 if advanced else 256,
            minValue=0,
        ),
        "Approximate number of blocks (SLIC superpixels)"
        + ("; 0 = about 25 samples per block." if advanced else "."),
        advanced=advanced,
    )
    alg.add(
        QgsProcessingParameterNumber(
            "COMPACTNESS",
            tr("Compactness"),
            QgsProcessingParameterNumber.Double,
            defaultValue=0.5,
            minValue=0.0,
        ),
        "Higher values give more compact blocks, lower values blocks that follow the terrain "
        "more closely (bands are standardised and weighted first).",
        advanced=True,
    )
    alg.add(
        QgsProcessingParameterString("BANDS", tr("Segmentation bands"), optional=True),
        "Comma-separated band names to segment on; empty: the DEM/elevation, aspect, "
        "curvature and slope bands found by name.",
        advanced=True,
    )
    alg.add(
        QgsProcessingParameterString("WEIGHTS", tr("Band weights"), optional=True),
        "Comma-separated weights, one per segmentation band; empty: 0.3, 0.1, 0.2, 0.4 for "
        "DEM, aspect, curvature and slope (as meta_LSM).",
        advanced=True,
    )
    alg.add(
        QgsProcessingParameterNumber(
            "ITERATIONS",
            tr("SLIC iterations"),
            QgsProcessingParameterNumber.Integer,
            defaultValue=10,
            minValue=1,
        ),
        "Iterations of the SLIC clustering.",
        advanced=True,
    )


def block_params(alg: SlidewiseAlgorithm, parameters, context) -> dict:
    """Engine parameters of the block group (unset values left out)."""
    params: dict = {
        "COMPACTNESS": alg.parameterAsDouble(parameters, "COMPACTNESS", context),
        "ITERATIONS": alg.parameterAsInt(parameters, "ITERATIONS", context),
    }
    n_blocks = alg.parameterAsInt(parameters, "N_BLOCKS", context)
    if n_blocks > 0:
        params["N_BLOCKS"] = n_blocks
    bands = alg.parameterAsString(parameters, "BANDS", context)
    if bands.strip():
        params["BANDS"] = [b.strip() for b in bands.split(",") if b.strip()]
    weights = alg.parameterAsString(parameters, "WEIGHTS", context)
    if weights.strip():
        try:
            params["WEIGHTS"] = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            from qgis.core import QgsProcessingException

            raise QgsProcessingException(
                tr(
                    "Band weights must be numbers separated by commas, for example "
                    "0.3, 0.1, 0.2, 0.4."
                )
            ) from None
    return params


class SegmentBlocksAlgorithm(SlidewiseAlgorithm):
    """Block-ID raster and block polygons with statistics."""

    ALG_ID = "segmentblocks"
    DISPLAY_NAME = "Segment terrain blocks"
    GROUP = "susceptibility"
    ICON = "blocks.svg"
    JOB = "segmentblocks"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Splits the region into terrain blocks with SLIC superpixels on standardised, "
        "weighted terrain bands (aspect as sine and cosine, nodata masked, every block one "
        "connected piece). Each block later gets its own adapted susceptibility model. "
        "Writes a block-ID raster and, optionally, block polygons with area, landslide "
        "count, sample count and mean terrain values."
    )

    def initAlgorithm(self, config=None) -> None:
        add_factor_stack(self)
        add_block_parameters(self)
        add_inventory(self, optional=True)
        self.add(
            QgsProcessingParameterRasterDestination("OUTPUT", tr("Blocks")),
            "Block-ID raster (GeoTIFF, int32, 0 = nodata).",
        )
        self.add(
            QgsProcessingParameterVectorDestination(
                "OUTPUT_POLYGONS", tr("Block polygons"), optional=True, createByDefault=True
            ),
            "Block polygons (GeoPackage) with block, pixels, area, landslides, samples and "
            "mean_<band> fields.",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        polygons = self.parameterAsOutputLayer(parameters, "OUTPUT_POLYGONS", context) or ""
        params = {
            **factor_stack_params(self, parameters, context),
            **block_params(self, parameters, context),
            "OUTPUT": output,
        }
        if parameters.get("INVENTORY"):
            params.update(inventory_params(self, parameters, context))
        if polygons:
            params["OUTPUT_POLYGONS"] = polygons
        return params, [output, polygons]

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT_POLYGONS", ""), "blocks.qml", context)
