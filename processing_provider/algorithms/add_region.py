"""slidewise:addregion — add a region's decoder to a multi-region mapping model (TSMU)."""

from __future__ import annotations

from slidewise.contract.specs.addregion import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class AddRegionAlgorithm(SlidewiseAlgorithm):
    """One shared encoder, one decoder per region, updated without forgetting."""

    ALG_ID = "addregion"
    DISPLAY_NAME = "Add region to mapping model"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "addregion"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Adds a decoder for a new region (ecoregion, sensor, event) to a mapping model whose "
        "encoder is shared by every region (TSMU). The old regions are measured before and "
        "after training (landslide-class F1 and IoU at each region's threshold): the "
        "forgetting table is logged, returned and stored in the model file with each "
        "region's bands, normalisation, threshold and metrics. Map landslides then picks the "
        "decoder by region name, or per area from a polygon layer with a region attribute."
    )
