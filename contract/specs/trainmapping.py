"""slidewise:trainmapping: train a landslide segmentation model on labelled imagery."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.groups import SEED
from slidewise.contract.specs.imagery import MAPPING_DATASET, NORMALISATIONS
from slidewise.contract.specs.training import (
    BATCH_SIZE,
    CHIPS_PER_EPOCH,
    EPOCHS,
    LR,
    OVERSAMPLE,
    PATIENCE,
    SELECT_METRIC,
    VALID_FRACTION,
    WEIGHT_DECAY,
)

#: Training recipes (engine: ``slidewise.engine.mapping.recipes.RECIPES``).
RECIPES = ("default", "l4s_baseline")
#: Word of a choice that keeps the recipe's value.
FROM_RECIPE = "recipe"
#: Architectures: the dialog's list first (its indexes stay), then the other smp ones.
ARCHITECTURES = (
    FROM_RECIPE,
    "unet",
    "unetplusplus",
    "deeplabv3plus",
    "fpn",
    "linknet",
    "manet",
    "pan",
    "segformer",
    "resunet",
    "pspnet",
    "upernet",
)
#: Losses (engine: ``slidewise.engine.imagery.losses.LOSSES``), ``ce`` last (an alias of bce).
LOSSES = (FROM_RECIPE, "dice_bce", "bce", "dice", "focal", "lovasz", "lovasz_bce", "ce")
#: D4 augmentation: the recipe's, on or off.
AUGMENT_CHOICES = (FROM_RECIPE, "true", "false")


def recipe_switch(name: str, label: str, help_text: str) -> Param:
    """An advanced yes/no override of a recipe setting ("(recipe)" keeps the recipe's)."""
    return Param(
        name,
        label,
        "choice",
        help_text,
        default=FROM_RECIPE,
        choices=AUGMENT_CHOICES,
        choice_labels=("(recipe)", "yes", "no"),
        advanced=True,
    )


#: What ranks the epochs: the recipe's choice, the selection metric or the validation loss.
SELECT_ON_CHOICES = (FROM_RECIPE, "metric", "loss")

#: Chip size, stride, validation share and normalisation: shared with addregion.
CHIPS: tuple[Param, ...] = (
    Param(
        "NORMALISATION",
        "Normalisation",
        "choice",
        "fit: per-band mean/std from the training split; l4s: the Landslide4Sense "
        "constants (14-band data); none. Stored in the model and re-applied when mapping.",
        default="fit",
        choices=NORMALISATIONS,
        advanced=True,
    ),
    Param(
        "CHIP_SIZE",
        "Chip size",
        "int",
        "Side of training chips (capped at the largest image side).",
        default=256,
        minimum=16,
        maximum=8192,
        unit="px",
        advanced=True,
    ),
    Param(
        "STRIDE",
        "Chip stride",
        "int",
        "Step between training chips; empty: the chip size.",
        minimum=1,
        maximum=8192,
        unit="px",
        advanced=True,
    ),
    VALID_FRACTION,
)

#: How the model is built (recipe values unless set).
MODEL: tuple[Param, ...] = (
    Param(
        "RECIPE",
        "Recipe",
        "choice",
        "default: the engine's recipe; l4s_baseline: the Landslide4Sense baseline.",
        default="default",
        choices=RECIPES,
    ),
    Param(
        "ARCHITECTURE",
        "Architecture",
        "choice",
        "Segmentation architecture; resunet is the residual U-Net with deep supervision "
        "(Prakash et al. 2021); recipe: the recipe's.",
        default=FROM_RECIPE,
        choices=ARCHITECTURES,
        choice_labels=("(recipe)", *ARCHITECTURES[1:]),
    ),
    Param(
        "LOSS",
        "Loss",
        "choice",
        "Training loss; recipe keeps the recipe's.",
        default=FROM_RECIPE,
        choices=LOSSES,
        choice_labels=("(recipe)", *LOSSES[1:]),
        advanced=True,
    ),
)

#: Everything the recipe sets that a parameter may override.
TRAINING: tuple[Param, ...] = (
    SELECT_METRIC,
    recipe_switch(
        "AUGMENT",
        "D4 augmentation",
        "Random rotations and mirrors of each chip; recipe: the recipe's.",
    ),
    recipe_switch(
        "PHOTOMETRIC",
        "Photometric augmentation",
        "Random brightness, contrast, colour balance, blur and noise of each chip, so the "
        "model transfers to images of other sensors and regions; recipe: the recipe's.",
    ),
    recipe_switch(
        "CALIBRATE",
        "Calibrate probabilities",
        "Fit Platt scaling on the validation pixels after training and store it in the "
        "model, so its probabilities are calibrated (expected calibration error before and "
        "after in the log); recipe: the recipe's.",
    ),
    Param(
        "SELECT_ON",
        "Select epochs on",
        "choice",
        "metric: the model selection metric at the tuned threshold; loss: the validation "
        "loss (smoother on few validation images); recipe: the recipe's.",
        default=FROM_RECIPE,
        choices=SELECT_ON_CHOICES,
        choice_labels=("(recipe)", "metric", "loss"),
        advanced=True,
    ),
    Param(
        "ENCODER",
        "Encoder",
        "text",
        "segmentation-models-pytorch encoder, e.g. resnet18, resnet34, efficientnet-b0, "
        "mit_b0; empty: the recipe's (random start, nothing is downloaded).",
        advanced=True,
    ),
    Param(
        "STREAMS",
        "Input streams (residual U-Net)",
        "text",
        "Groups of 1-based band positions, each with its own stem, e.g. 1,2,3;4,5,6;7,8 for "
        "pre-event RGB, post-event RGB, terrain.",
        advanced=True,
    ),
    Param(
        "MODEL_OPTIONS",
        "Model options (JSON)",
        "text",
        "Extra architecture options as a JSON object, merged into the recipe's; for resunet "
        'e.g. {"widths": [16, 32, 64, 128, 256], "input_norm": "tile"} ("tile": each tile '
        'standardised by its own band statistics, on in the default recipe; "none": off).',
        advanced=True,
    ),
    Param(
        "THRESHOLD",
        "Threshold",
        "text",
        "auto (tuned on validation) or a probability stored with the model and used by Map "
        "landslides by default; empty: the recipe's.",
        advanced=True,
    ),
    Param(
        "POS_WEIGHT",
        "Landslide weight",
        "text",
        "auto, none, or a number: weight of landslide pixels in the BCE loss (class "
        "imbalance); empty: the recipe's.",
        advanced=True,
    ),
    replace(EPOCHS, help="Training epochs; empty: the recipe's (30).", default=None),
    replace(BATCH_SIZE, help="Chips per batch; empty: the recipe's (8).", default=None),
    replace(LR, help="Adam learning rate; empty: the recipe's.", default=None),
    replace(WEIGHT_DECAY, help="Weight decay; empty: the recipe's.", default=None),
)

#: Early stopping, sampling, encoder depth and weights, checkpoints.
RUN: tuple[Param, ...] = (
    PATIENCE,
    OVERSAMPLE,
    CHIPS_PER_EPOCH,
    Param(
        "ENCODER_DEPTH",
        "Encoder depth",
        "int",
        "smp encoder depth; empty: the recipe's (5).",
        minimum=3,
        maximum=5,
        advanced=True,
    ),
    Param(
        "ENCODER_WEIGHTS",
        "Encoder weights",
        "file",
        "Optional local encoder weights (for example from Pre-train encoder), loaded with "
        "strict key checking.",
        file_filter="Slidewise encoder (*.safetensors)",
        advanced=True,
    ),
    Param(
        "CHECKPOINT",
        "Checkpoint",
        "output_file",
        "Checkpoint written every epoch (weights, optimiser and random state; no pickle).",
        file_filter="Checkpoint (*.safetensors)",
        advanced=True,
        create_by_default=False,
        kept_on_stop=True,
    ),
    Param(
        "RESUME",
        "Resume from checkpoint",
        "bool",
        "Continue training from the checkpoint up to the number of epochs.",
        default=False,
        advanced=True,
    ),
)

#: The seed as a job parameter; unset: the runtime seed.
JOB_SEED: tuple[Param, ...] = replace_param(
    (SEED,), "SEED", default=None, help="Seed of splits, sampling, augmentation and weights."
)

OUTPUT = Param(
    "OUTPUT",
    "Model file",
    "output_file",
    "The trained model (safetensors with JSON metadata: architecture, bands, normalisation, "
    "tile size, threshold, validation metrics).",
    file_filter="Slidewise model (*.safetensors)",
    required=True,
)

SPEC = AlgorithmSpec(
    "trainmapping",
    params(
        MAPPING_DATASET,
        MODEL,
        CHIPS[:1],
        TRAINING,
        CHIPS[1:],
        RUN,
        (OUTPUT,),
        JOB_SEED,
    ),
)
