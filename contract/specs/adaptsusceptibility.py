"""slidewise:adaptsusceptibility: few-shot adaptation of a block-wise model to new blocks."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.factors import (
    ALIGN,
    BLOCKS,
    BLOCKS_OUTPUT,
    INVENTORY,
    SAMPLING_HIDDEN,
    SAMPLING_HIDDEN_NAMES,
    STACK_INPUTS,
)

SOURCES: tuple[Param, ...] = (
    Param(
        "MODEL",
        "Block-wise model",
        "file",
        "A model from Train susceptibility model with a block-wise method (METHOD hybrid or "
        "meta; auto picks one of them when it wins): its meta-learned initialisation is "
        "adapted here, not trained again (hybrid: its global part and mix are kept). "
        "Global models (rf, lr, gbm, svm, mlp) are refused.",
        required=True,
        file_filter="Slidewise model (*.safetensors)",
    ),
    *STACK_INPUTS,
    ALIGN,
)

NEW_SAMPLES = replace_param(
    INVENTORY,
    "INVENTORY",
    label="New landslide samples",
    help="A few landslide points or polygons of the area (with LABEL_FIELD: 1 landslide, "
    "0 not); without 0 labels or NEGATIVES, non-landslides are drawn at random "
    "outside a buffer. Layers in another CRS are reprojected.",
    required=True,
)

ADAPTATION: tuple[Param, ...] = (
    Param(
        "BLOCKS",
        "Blocks of the area",
        "raster",
        "Block-ID raster of the area on the grid of the factor stack (Segment terrain "
        "blocks); empty: the stack is segmented here with the block parameters below "
        "(N_BLOCKS 0: blocks of the size the model was trained on).",
    ),
    Param(
        "SHOTS",
        "Samples adapted on per block",
        "int",
        "At most this many samples of each block adapt it (class-balanced draw); 0 = every "
        "sample not held out. Every sample not adapted on is scored.",
        default=0,
        minimum=0,
        maximum=100_000,
    ),
    Param(
        "HOLDOUT",
        "Held-out share per block",
        "float",
        "Share of each class in each block kept out of adaptation to score the block before "
        "and after it (a class with one sample in a block is always adapted on); 0 = adapt "
        "on every sample, no scores.",
        default=0.3,
        minimum=0.0,
        maximum=0.9,
    ),
)

OUTPUTS: tuple[Param, ...] = (
    Param(
        "OUTPUT",
        "Adapted model file",
        "output_file",
        "The model with each block adapted to its new samples (safetensors with JSON "
        "metadata); Predict susceptibility uses it as it is, with the blocks of this area.",
        required=True,
        file_filter="Slidewise model (*.safetensors)",
    ),
    BLOCKS_OUTPUT,
    Param(
        "OUTPUT_SAMPLES",
        "Samples and scores",
        "output_file",
        "Optional CSV of the samples: x, y, label, block, role (support: adapted on; "
        "holdout: scored) and the probability of landslide before and after adaptation.",
        create_by_default=False,
        file_filter="CSV (*.csv)",
    ),
)

SPEC = AlgorithmSpec(
    "adaptsusceptibility",
    params(SOURCES, NEW_SAMPLES, ADAPTATION, BLOCKS, OUTPUTS, SAMPLING_HIDDEN),
    hidden=SAMPLING_HIDDEN_NAMES,
)
