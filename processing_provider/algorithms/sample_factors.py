"""slidewise:samplefactors — a sample table from a factor stack and an inventory."""

from __future__ import annotations

from slidewise.contract.specs.samplefactors import SPEC
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm


class SampleFactorsAlgorithm(FactorStackAlgorithm):
    """Factor values at landslides and non-landslides, as a table for training."""

    ALG_ID = "samplefactors"
    DISPLAY_NAME = "Sample factors at landslides"
    GROUP = "preparation"
    ICON = "susceptibility.svg"
    JOB = "samplefactors"
    SPEC = SPEC
    SHORT_HELP = (
        "Samples the factor stack at landslide points or inside landslide polygons, and at "
        "non-landslide places (given, or drawn at random outside a buffer around the "
        "landslides), and writes a table with the factors, X, Y and label (1 = landslide, "
        "0 = not). The table can be used by Train susceptibility model and by the benchmark."
    )
