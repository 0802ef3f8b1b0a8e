"""slidewise:evaluatemapping — pixel and object metrics of a landslide map."""

from __future__ import annotations

from slidewise.contract.specs.evaluatemapping import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class EvaluateMappingAlgorithm(SlidewiseAlgorithm):
    """Precision, recall, F1, IoU, MCC, confusion matrix, object hit rates."""

    ALG_ID = "evaluatemapping"
    DISPLAY_NAME = "Evaluate landslide map"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "evaluatemapping"
    SPEC = SPEC
    SHORT_HELP = (
        "Compares a landslide probability (or 0/1 mask) raster with reference labels: "
        "precision, recall, F1, IoU and MCC of the landslide class, the confusion matrix, "
        "and object-level hit rates (share of reference landslides touched by the map, share "
        "of mapped objects that hit a reference). For point-like references (labels drawn "
        "as small blobs around inventory points) it reports the hit rate at landslide points "
        "and the false-alarm rate at non-landslide points. A reference on another grid is "
        "aligned (nearest neighbour)."
    )
