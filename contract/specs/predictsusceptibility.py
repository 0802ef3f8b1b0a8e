"""slidewise:predictsusceptibility: probability of landslide and a classed map."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param, params
from slidewise.contract.specs.factors import ALIGN, CLASSES, STACK_INPUTS, X_FIELD, Y_FIELD
from slidewise.contract.specs.groups import BLOCK_SIZE, COG

SPEC = AlgorithmSpec(
    "predictsusceptibility",
    params(
        (
            Param(
                "MODEL",
                "Model file",
                "file",
                "A model from Train susceptibility model.",
                required=True,
                file_filter="Slidewise model (*.safetensors)",
            ),
        ),
        STACK_INPUTS,
        (
            ALIGN,
            Param(
                "BLOCKS",
                "Blocks",
                "raster",
                "Block-ID raster; empty: the one recorded in the model (its hash must match).",
                advanced=True,
            ),
        ),
        CLASSES,
        (
            replace(
                BLOCK_SIZE,
                label="Window size",
                help="Side of the windows the stack is predicted in; bounds the memory used.",
                default=512,
            ),
            Param(
                "OUTPUT",
                "Susceptibility",
                "output_raster",
                "Probability of landslide (GeoTIFF float32, 0-1, nodata NaN).",
                required=True,
            ),
            Param(
                "CLASSED",
                "Susceptibility classes",
                "output_raster",
                "Classed map (uint8: 1 very low ... 5 very high, 0 nodata), styled with a legend.",
            ),
            Param(
                "TABLE",
                "Sample table",
                "file",
                "Instead of a stack: a CSV/XLSX table with the model's factor columns (and "
                "X_FIELD/Y_FIELD for models trained on tables); OUTPUT is then a CSV.",
                file_filter="Tables (*.csv *.xlsx)",
            ),
            X_FIELD,
            Y_FIELD,
        ),
        (COG,),
    ),
    hidden=frozenset({"TABLE", "X_FIELD", "Y_FIELD"}),
)
