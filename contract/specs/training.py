"""Training and tiling parameters shared by several algorithms (one declaration each).

Name, label, kind, unit and range are declared here once; an algorithm whose help
text or default differs takes the parameter through :func:`dataclasses.replace`.
"""

from __future__ import annotations

from slidewise.contract.spec import Param

#: Largest number of epochs (and of early-stopping patience).
MAX_EPOCHS = 100000
#: Largest batch.
MAX_BATCH = 4096

#: Training epochs.
EPOCHS = Param(
    "EPOCHS",
    "Epochs",
    "int",
    "Training epochs.",
    default=20,
    minimum=1,
    maximum=MAX_EPOCHS,
    advanced=True,
)
#: Learning rate of the optimiser.
LR = Param(
    "LR",
    "Learning rate",
    "float",
    "Adam learning rate.",
    default=1e-3,
    minimum=1e-7,
    maximum=1.0,
    advanced=True,
)
#: Training batch.
BATCH_SIZE = Param(
    "BATCH_SIZE",
    "Batch size",
    "int",
    "Chips per batch.",
    default=16,
    minimum=1,
    maximum=MAX_BATCH,
    advanced=True,
)
#: Weight decay of the optimiser.
WEIGHT_DECAY = Param(
    "WEIGHT_DECAY",
    "Weight decay",
    "float",
    "AdamW weight decay.",
    default=0.05,
    minimum=0.0,
    maximum=1.0,
    advanced=True,
)
#: D4 augmentation of training chips.
AUGMENT = Param(
    "AUGMENT",
    "D4 augmentation",
    "bool",
    "Random flips and rotations.",
    default=True,
    advanced=True,
)

#: Tile side of tiled inference.
TILE_SIZE = Param(
    "TILE_SIZE",
    "Tile size",
    "int",
    "Largest tile side (rounded up to the model's alignment, 32 for a U-Net); empty: "
    "the model's training tile, at least 576 for fully convolutional models (U-Net "
    "and friends).",
    minimum=32,
    maximum=8192,
    unit="px",
    advanced=True,
)
#: Overlap of neighbouring tiles.
OVERLAP = Param(
    "OVERLAP",
    "Tile overlap",
    "int",
    "Overlap of neighbouring tiles over which predictions are blended (rounded up like "
    "the tile size).",
    default=64,
    minimum=0,
    maximum=4096,
    unit="px",
    advanced=True,
)
#: Tiles per forward pass of tiled inference.
TILE_BATCH = Param(
    "BATCH_SIZE",
    "Batch size",
    "int",
    "Tiles per forward pass; empty: 1 on CPU, 8 on GPU.",
    minimum=1,
    maximum=1024,
    advanced=True,
)
