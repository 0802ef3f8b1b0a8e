"""slidewise:addregion: add a region's decoder to a multi-region mapping model (TSMU)."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.imagery import MAPPING_DATASET
from slidewise.contract.specs.training import (
    AUGMENT,
    BATCH_SIZE,
    CHIPS_PER_EPOCH,
    EPOCHS,
    LR,
    MAX_EPOCHS,
    OVERSAMPLE,
    PATIENCE,
    SELECT_METRIC,
)
from slidewise.contract.specs.trainmapping import (
    CHIPS,
    JOB_SEED,
)

MODEL_FILTER = "Slidewise model (*.safetensors)"
MODES = ("frozen", "distill")
#: Word of LOSS that keeps the default (soft Dice, as TSMU).
DEFAULT_LOSS = "default"
#: Losses: the dialog's list first (its indexes stay), ``ce`` last (an alias of bce).
LOSSES = (DEFAULT_LOSS, "dice", "dice_bce", "bce", "focal", "lovasz", "lovasz_bce", "ce")

#: The model and the region being added.
REGION: tuple[Param, ...] = (
    Param(
        "MODEL",
        "Model file",
        "file",
        "A multi-region model (from this algorithm) or a mapping model trained with "
        "architecture unet (converted; its region is named by Base region name). Empty: a new "
        "model is trained whose first region is this one.",
        file_filter=MODEL_FILTER,
    ),
    Param(
        "REGION",
        "Region name",
        "text",
        "Name of the region whose decoder is added (letters, digits, _, -, spaces), e.g. bijie.",
        required=True,
    ),
    Param(
        "MODE",
        "Mode",
        "choice",
        "frozen: encoder and old decoders frozen, only the new decoder learns (old regions "
        "cannot forget); distill: the encoder is fine-tuned while the old decoders' outputs "
        "on the new images are kept close to what they were (learning without forgetting). "
        "Empty: frozen (a new model trains encoder and decoder).",
        choices=MODES,
    ),
    Param(
        "BASE_REGION",
        "Base region name",
        "text",
        "Region name given to a converted mapping model; empty: base.",
        advanced=True,
    ),
    Param(
        "REPLACE",
        "Replace an existing region",
        "bool",
        "Allow the region to exist already: its decoder is retrained.",
        default=False,
        advanced=True,
    ),
    Param(
        "INIT_FROM",
        "Start the decoder from region",
        "text",
        "Region whose decoder the new one starts from, or random; empty: the model's first region.",
        advanced=True,
    ),
    Param(
        "OLD_REGION_DATA",
        "Old regions' validation data (JSON)",
        "text",
        'Data to measure forgetting on, e.g. {"bijie": {"images": "...", "masks": "...", '
        '"dataset_type": "pairs"}}; empty: each region\'s stored validation data.',
        advanced=True,
    ),
)

#: A new model's encoder (only when MODEL is empty).
NEW_MODEL: tuple[Param, ...] = (
    Param(
        "ENCODER",
        "Encoder (new model)",
        "text",
        "segmentation-models-pytorch encoder of a new model, e.g. resnet18 (default), resnet34.",
        default="resnet18",
        advanced=True,
    ),
    Param(
        "ENCODER_DEPTH",
        "Encoder depth (new model)",
        "int",
        "smp encoder depth of a new model.",
        default=5,
        minimum=3,
        maximum=5,
        advanced=True,
    ),
    Param(
        "ENCODER_WEIGHTS",
        "Encoder weights (new model)",
        "file",
        "Local encoder weights, e.g. from Pre-train encoder, loaded with strict key checking.",
        file_filter="Slidewise encoder (*.safetensors)",
        advanced=True,
    ),
)

#: Training of the new decoder.
TRAINING: tuple[Param, ...] = (
    EPOCHS,
    LR,
    replace(BATCH_SIZE, help="Chips per batch (TSMU: 2).", default=2),
    replace(CHIPS_PER_EPOCH, help="0: all training chips."),
    Param(
        "LOSS",
        "Loss",
        "choice",
        "Task loss of the new region; default is soft Dice, as in TSMU.",
        default=DEFAULT_LOSS,
        choices=LOSSES,
        choice_labels=("(default)", *LOSSES[1:]),
        advanced=True,
    ),
    AUGMENT,
    replace(OVERSAMPLE, help="Share of chips with landslides drawn per epoch.", default=0.5),
)

#: Learning without forgetting (MODE distill).
DISTILL: tuple[Param, ...] = (
    Param(
        "LAMBDA",
        "Distillation weight",
        "float",
        "Mode distill: weight of keeping the old decoders' outputs (0 = plain fine-tuning).",
        default=1.0,
        minimum=0.0,
        maximum=1e4,
        advanced=True,
    ),
    Param(
        "TEMPERATURE",
        "Distillation temperature",
        "float",
        "Mode distill: temperature of the soft targets.",
        default=2.0,
        minimum=0.05,
        maximum=100.0,
        advanced=True,
    ),
    Param(
        "ENCODER_LR_SCALE",
        "Encoder learning-rate scale",
        "float",
        "Mode distill: the encoder learns at the learning rate times this.",
        default=0.1,
        minimum=0.0,
        maximum=100.0,
        advanced=True,
    ),
    Param(
        "WARMUP_EPOCHS",
        "Warm-up epochs",
        "int",
        "Mode distill: first epochs that train the new decoder alone (counted in the epochs).",
        default=0,
        minimum=0,
        maximum=MAX_EPOCHS,
        advanced=True,
    ),
    Param(
        "TRAIN_OLD_DECODERS",
        "Train the old decoders too",
        "bool",
        "Mode distill: optimise the old decoders as well (joint training) instead of keeping "
        "them fixed.",
        default=False,
        advanced=True,
    ),
)

#: Model selection and early stopping.
SELECTION: tuple[Param, ...] = (
    replace(
        SELECT_METRIC,
        help="Landslide-class metric of the new region's validation chips used to pick the "
        "epoch and tune the threshold.",
    ),
    Param(
        "THRESHOLD",
        "Threshold",
        "text",
        "auto (tuned on validation) or a probability stored for the region.",
        default="auto",
        advanced=True,
    ),
    replace(PATIENCE, help="Epochs without improvement; 0 = off.", default=0),
)

OUTPUT = Param(
    "OUTPUT",
    "Multi-region model file",
    "output_file",
    "The model with every region's decoder: a new file (the input model file is never "
    "overwritten).",
    file_filter=MODEL_FILTER,
    required=True,
)

SPEC = AlgorithmSpec(
    "addregion",
    params(
        REGION,
        MAPPING_DATASET,
        replace_param(
            CHIPS,
            "NORMALISATION",
            help="fit: per-band mean/std of the region's training chips; l4s: the "
            "Landslide4Sense constants; none.",
        ),
        NEW_MODEL,
        TRAINING,
        DISTILL,
        SELECTION,
        (OUTPUT,),
        JOB_SEED,
    ),
)
