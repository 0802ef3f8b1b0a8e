"""slidewise:samplefactors: factor values at landslides and non-landslides, as a table."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.analysis import COLLINEARITY
from slidewise.contract.specs.factors import (
    FACTOR_STACK,
    INVENTORY,
    SAMPLING_HIDDEN,
    SAMPLING_HIDDEN_NAMES,
)

SPEC = AlgorithmSpec(
    "samplefactors",
    params(
        FACTOR_STACK,
        replace_param(INVENTORY, "INVENTORY", required=True),
        (
            Param(
                "OUTPUT",
                "Sample table",
                "output_file",
                "CSV table (factors..., X, Y, label) or GeoPackage points with the same fields.",
                required=True,
                file_filter="CSV (*.csv);;GeoPackage (*.gpkg)",
            ),
        ),
        COLLINEARITY,
        SAMPLING_HIDDEN,
    ),
    hidden=SAMPLING_HIDDEN_NAMES,
)
