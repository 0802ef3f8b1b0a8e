"""slidewise:predictsusceptibility: probability of landslide, its uncertainty and a classed map."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param, params
from slidewise.contract.specs.factors import ALIGN, CLASSES, STACK_INPUTS, X_FIELD, Y_FIELD
from slidewise.contract.specs.groups import BLOCK_SIZE, COG, SCALE_OUT

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
                "BLEND_WIDTH",
                "Blending width at block borders",
                "int",
                "Within this distance of a block border the models of the blocks on both "
                "sides are blended, the neighbour's share falling from one half at the border "
                "to zero at this distance, so the map has no seams; farther in, each block "
                "keeps its own model. 0: hard borders (one model per block). Meta models only. "
                "The default 2 px takes the jump out of the borders while keeping the held-out "
                "AUC; a wider band hides the level difference between blocks more gently but "
                "puts more pixels under a neighbour's model, which is less right there (16 px "
                "lowered the held-out AUC on Ecuador in five seeds out of five).",
                default=2,
                minimum=0,
                maximum=1000,
                unit="px",
                advanced=True,
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
                "UNCERTAINTY",
                "Susceptibility uncertainty",
                "output_raster",
                "Standard deviation of the calibrated probability over the model's bootstrap "
                "ensemble (GeoTIFF float32, 0-0.5, nodata NaN): high where the few samples of "
                "a block leave the model unsure. Needs a model trained by this version.",
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
        SCALE_OUT,
        (COG,),
    ),
    hidden=frozenset({"TABLE", "X_FIELD", "Y_FIELD"}),
)
