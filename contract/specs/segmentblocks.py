"""slidewise:segmentblocks: terrain blocks (SLIC superpixels) of a factor stack."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.factors import (
    BLOCKS,
    FACTOR_STACK,
    INVENTORY,
    SAMPLING_HIDDEN,
    SAMPLING_HIDDEN_NAMES,
)
from slidewise.contract.specs.groups import COG

#: Blocks when N_BLOCKS is 0.
DEFAULT_BLOCKS = 256

SPEC = AlgorithmSpec(
    "segmentblocks",
    params(
        FACTOR_STACK,
        replace_param(
            BLOCKS,
            "N_BLOCKS",
            default=DEFAULT_BLOCKS,
            advanced=False,
            help=(
                f"Approximate number of blocks (SLIC superpixels); 0 = the default, "
                f"{DEFAULT_BLOCKS} (the log says which count was used). At most one block "
                "per 16 pixels of the raster (of its segmentation grid, for rasters over "
                "the segmentation size): more is refused before any work."
            ),
        ),
        INVENTORY,
        (
            Param(
                "OUTPUT",
                "Blocks",
                "output_raster",
                "Block-ID raster (GeoTIFF, int32, 0 = nodata).",
                required=True,
            ),
            Param(
                "OUTPUT_POLYGONS",
                "Block polygons",
                "output_vector",
                "Block polygons (GeoPackage) with block, pixels, area, landslides, samples and "
                "mean_<band> fields.",
            ),
        ),
        (COG,),
        SAMPLING_HIDDEN,
    ),
    hidden=SAMPLING_HIDDEN_NAMES,
)
