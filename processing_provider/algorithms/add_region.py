"""slidewise:addregion — add a region's decoder to a multi-region mapping model (TSMU)."""

from __future__ import annotations

from slidewise.processing_provider.algorithms.options import (
    MAPPING_DATASET,
    Option,
    OptionAlgorithm,
)

MODEL_FILTER = "Slidewise model (*.safetensors)"

#: The model and the region being added.
REGION_OPTIONS = (
    Option(
        "MODEL",
        "Model file",
        "file",
        "A multi-region model (from this algorithm) or a mapping model trained with "
        "architecture unet (converted; its region is named by Base region name). Empty: a new "
        "model is trained whose first region is this one.",
        advanced=False,
        file_filter=MODEL_FILTER,
    ),
    Option(
        "REGION",
        "Region name",
        "text",
        "Name of the region whose decoder is added (letters, digits, _, -, spaces), e.g. bijie.",
        advanced=False,
        required=True,
    ),
    Option(
        "MODE",
        "Mode",
        "choice",
        "frozen: encoder and old decoders frozen, only the new decoder learns (old regions "
        "cannot forget); distill: the encoder is fine-tuned while the old decoders' outputs "
        "on the new images are kept close to what they were (learning without forgetting).",
        choices=("frozen", "distill"),
        advanced=False,
    ),
    Option(
        "BASE_REGION",
        "Base region name",
        "text",
        "Region name given to a converted mapping model; empty: base.",
    ),
    Option(
        "REPLACE",
        "Replace an existing region",
        "bool",
        "Allow the region to exist already: its decoder is retrained.",
        default=False,
    ),
    Option(
        "INIT_FROM",
        "Start the decoder from region",
        "text",
        "Region whose decoder the new one starts from, or random; empty: the model's first region.",
    ),
    Option(
        "OLD_REGION_DATA",
        "Old regions' validation data (JSON)",
        "text",
        'Data to measure forgetting on, e.g. {"bijie": {"images": "...", "masks": "...", '
        '"dataset_type": "pairs"}}; empty: each region\'s stored validation data.',
    ),
)

#: Data preparation and training of the new decoder (engine defaults apply when unset).
TRAINING_OPTIONS = (
    Option(
        "NORMALISATION",
        "Normalisation",
        "choice",
        "fit: per-band mean/std of the region's training chips; l4s: the Landslide4Sense "
        "constants; none.",
        choices=("fit", "l4s", "none"),
    ),
    Option("CHIP_SIZE", "Chip size (pixels)", "int", "Side of training chips; empty: 256."),
    Option("STRIDE", "Chip stride (pixels)", "int", "Step between chips; empty: chip size."),
    Option(
        "VALID_FRACTION",
        "Validation share",
        "float",
        "Share of the training data split off by space for validation when no validation set "
        "is given; empty: 0.2.",
    ),
    Option(
        "ENCODER",
        "Encoder (new model)",
        "text",
        "segmentation-models-pytorch encoder of a new model, e.g. resnet18 (default), resnet34.",
    ),
    Option("ENCODER_DEPTH", "Encoder depth (new model)", "int", "3-5; empty: 5."),
    Option(
        "ENCODER_WEIGHTS",
        "Encoder weights (new model)",
        "file",
        "Local encoder weights, e.g. from Pre-train encoder, loaded with strict key checking.",
        file_filter="Slidewise encoder (*.safetensors)",
    ),
    Option("EPOCHS", "Epochs", "int", "Training epochs; empty: 20.", minimum=1),
    Option("LR", "Learning rate", "float", "Adam learning rate; empty: 0.001."),
    Option("BATCH_SIZE", "Batch size", "int", "Chips per batch; empty: 2 (as TSMU).", minimum=1),
    Option("CHIPS_PER_EPOCH", "Chips per epoch", "int", "0 or empty: all training chips."),
    Option(
        "LOSS",
        "Loss",
        "choice",
        "Task loss of the new region; (default) is soft Dice, as in TSMU.",
        choices=("(default)", "dice", "dice_bce", "bce", "focal", "lovasz", "lovasz_bce"),
    ),
    Option("AUGMENT", "D4 augmentation", "bool", "Random flips and rotations.", default=True),
    Option(
        "OVERSAMPLE",
        "Landslide oversampling",
        "float",
        "Share of chips with landslides drawn per epoch; empty: 0.5.",
        maximum=0.95,
    ),
    Option(
        "LAMBDA",
        "Distillation weight",
        "float",
        "Mode distill: weight of keeping the old decoders' outputs (0 = plain fine-tuning); "
        "empty: 1.",
    ),
    Option(
        "TEMPERATURE",
        "Distillation temperature",
        "float",
        "Mode distill: temperature of the soft targets; empty: 2.",
        minimum=0.05,
    ),
    Option(
        "ENCODER_LR_SCALE",
        "Encoder learning-rate scale",
        "float",
        "Mode distill: the encoder learns at the learning rate times this; empty: 0.1.",
    ),
    Option(
        "WARMUP_EPOCHS",
        "Warm-up epochs",
        "int",
        "Mode distill: first epochs that train the new decoder alone; empty: 0.",
    ),
    Option(
        "TRAIN_OLD_DECODERS",
        "Train the old decoders too",
        "bool",
        "Mode distill: optimise the old decoders as well (joint training) instead of keeping "
        "them fixed.",
        default=False,
    ),
    Option(
        "SELECT_METRIC",
        "Model selection metric",
        "choice",
        "Landslide-class metric of the new region's validation chips used to pick the epoch "
        "and tune the threshold.",
        choices=("f1", "iou", "mcc"),
    ),
    Option(
        "THRESHOLD",
        "Threshold",
        "text",
        "auto (tuned on validation; the default) or a probability stored for the region.",
    ),
    Option("PATIENCE", "Early-stopping patience", "int", "Epochs without improvement; 0 = off."),
)


class AddRegionAlgorithm(OptionAlgorithm):
    """One shared encoder, one decoder per region, updated without forgetting."""

    ALG_ID = "addregion"
    DISPLAY_NAME = "Add region to mapping model"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "addregion"
    SHORT_HELP = (
        "Adds a decoder for a new region (ecoregion, sensor, event) to a mapping model whose "
        "encoder is shared by every region (TSMU). The old regions are measured before and "
        "after training (landslide-class F1 and IoU at each region's threshold): the "
        "forgetting table is logged, returned and stored in the model file with each "
        "region's bands, normalisation, threshold and metrics. Map landslides then picks the "
        "decoder by region name, or per area from a polygon layer with a region attribute."
    )

    OPTIONS = (REGION_OPTIONS, MAPPING_DATASET, TRAINING_OPTIONS)
    OUTPUT_LABEL = "Multi-region model file"
    OUTPUT_HELP = (
        "The model with every region's decoder (may be the input model file: it is "
        "replaced only when training has finished)."
    )
