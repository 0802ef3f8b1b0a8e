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
#: Largest number of chips drawn per epoch.
MAX_CHIPS_PER_EPOCH = 10**9
#: Metrics that may select the epoch (landslide class).
SELECT_METRICS = ("f1", "iou", "mcc")

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
#: Validation share of a spatial split.
VALID_FRACTION = Param(
    "VALID_FRACTION",
    "Validation share",
    "float",
    "Share of the training data split off by space for validation when no validation set is given.",
    default=0.2,
    minimum=0.01,
    maximum=0.9,
    advanced=True,
)
#: Metric that picks the epoch and tunes the threshold.
SELECT_METRIC = Param(
    "SELECT_METRIC",
    "Model selection metric",
    "choice",
    "Landslide-class metric used to pick the epoch and tune the threshold.",
    default="f1",
    choices=SELECT_METRICS,
    advanced=True,
)
#: Early stopping.
PATIENCE = Param(
    "PATIENCE",
    "Early-stopping patience",
    "int",
    "Stop after this many epochs without a better validation score (0 = never); empty: "
    "the recipe's.",
    minimum=0,
    maximum=MAX_EPOCHS,
    advanced=True,
)
#: Share of chips with landslides per epoch.
OVERSAMPLE = Param(
    "OVERSAMPLE",
    "Landslide oversampling",
    "float",
    "Share of chips with landslides drawn per epoch (0 = plain shuffling); empty: the recipe's.",
    minimum=0.0,
    maximum=0.95,
    advanced=True,
)
#: Chips drawn per epoch.
CHIPS_PER_EPOCH = Param(
    "CHIPS_PER_EPOCH",
    "Chips per epoch",
    "int",
    "0 = as many as there are.",
    default=0,
    minimum=0,
    maximum=MAX_CHIPS_PER_EPOCH,
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
    "and friends), at least 1088 when they run on the CPU (less overlap computed twice, "
    "about 350-650 MB more memory; 576 gives the smaller layout back). A model that "
    "standardises each tile (the default recipe) gets the tile its threshold was chosen with "
    "(1088) on every device: another tile changes its probabilities.",
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
