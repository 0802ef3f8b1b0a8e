"""slidewise:samplefactors — a sample table from a factor stack and an inventory."""

from __future__ import annotations

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm
from slidewise.processing_provider.algorithms.shared_parameters import (
    add_factor_stack,
    add_inventory,
    factor_stack_params,
    inventory_params,
)


class SampleFactorsAlgorithm(SlidewiseAlgorithm):
    """Factor values at landslides and non-landslides, as a table for training."""

    ALG_ID = "samplefactors"
    DISPLAY_NAME = "Sample factors at landslides"
    GROUP = "preparation"
    ICON = "susceptibility.svg"
    JOB = "samplefactors"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Samples the factor stack at landslide points or inside landslide polygons, and at "
        "non-landslide places (given, or drawn at random outside a buffer around the "
        "landslides), and writes a table with the factors, X, Y and label (1 = landslide, "
        "0 = not). The table can be used by Train susceptibility model and by the benchmark."
    )

    def initAlgorithm(self, config=None) -> None:
        add_factor_stack(self)
        add_inventory(self)
        self.add_output_file(
            "Sample table",
            "CSV (*.csv);;GeoPackage (*.gpkg)",
            "CSV table (factors..., X, Y, label) or GeoPackage points with the same fields.",
        )

    def job_parameters(self, parameters, context, feedback):
        params = {
            **factor_stack_params(self, parameters, context),
            **inventory_params(self, parameters, context),
        }
        return self.with_output_file(params, parameters, context)
