"""slidewise:segmentblocks — terrain blocks (SLIC superpixels) of a factor stack."""

from __future__ import annotations

from slidewise.contract.specs.segmentblocks import SPEC
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm


class SegmentBlocksAlgorithm(FactorStackAlgorithm):
    """Block-ID raster and block polygons with statistics."""

    ALG_ID = "segmentblocks"
    DISPLAY_NAME = "Segment terrain blocks"
    GROUP = "susceptibility"
    ICON = "blocks.svg"
    JOB = "segmentblocks"
    SPEC = SPEC
    SHORT_HELP = (
        "Splits the region into terrain blocks with SLIC superpixels on standardised, "
        "weighted terrain bands (aspect as sine and cosine, nodata masked, every block one "
        "connected piece). Each block later gets its own adapted susceptibility model. "
        "Writes a block-ID raster and, optionally, block polygons with area, landslide "
        "count, sample count and mean terrain values."
    )

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT_POLYGONS", ""), "blocks.qml", context)
