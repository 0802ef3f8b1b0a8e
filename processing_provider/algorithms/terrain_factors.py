"""slidewise:terrainfactors — terrain factors from a DEM."""

from __future__ import annotations

from slidewise.contract.specs.terrainfactors import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class TerrainFactorsAlgorithm(SlidewiseAlgorithm):
    """Slope, aspect, curvatures, hillshade and TWI as one multi-band GeoTIFF."""

    ALG_ID = "terrainfactors"
    DISPLAY_NAME = "Terrain factors from a DEM"
    GROUP = "preparation"
    ICON = "terrain.svg"
    JOB = "terrainfactors"
    SPEC = SPEC
    SHORT_HELP = (
        "Computes slope (degrees), aspect (degrees clockwise from north, plus its sine and "
        "cosine), plan and profile curvature, hillshade and the topographic wetness index "
        "from a DEM, and writes them as one GeoTIFF whose bands carry these names. Slope "
        "and aspect use Horn's method, as gdaldem does. The DEM must be in a projected "
        "CRS; a DEM in degrees is refused unless you choose to convert degrees to metres."
    )

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "terrain_factors.qml", context)
