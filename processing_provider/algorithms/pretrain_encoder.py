"""slidewise:pretrainencoder — self-supervised (MAE) or distilled encoder pre-training."""

from __future__ import annotations

from slidewise.processing_provider.algorithms.options import (
    DATASET_TYPES,
    LABEL_READING,
    Option,
    OptionAlgorithm,
)

PRETRAIN_OPTIONS = (
    Option(
        "IMAGES",
        "Images (folder or file)",
        "folder",
        "Unlabelled landslide imagery: PNG/JPEG pictures, GeoTIFFs (any band count) or "
        "Landslide4Sense image_N.h5 files.",
        advanced=False,
        required=True,
    ),
    Option(
        "MODE",
        "Mode",
        "choice",
        "mae: masked-autoencoder pre-training (hide most patches, reconstruct them); "
        "distill: train the encoder to reproduce a trained teacher's landslide outputs "
        "(soft targets at a temperature).",
        choices=("mae", "distill"),
        advanced=False,
    ),
    Option(
        "BACKBONE",
        "Encoder",
        "text",
        "segmentation-models-pytorch encoder, e.g. resnet18 (default) or resnet34; ResNets "
        "also fit the detection backbones of Train detection model.",
        advanced=False,
    ),
    Option(
        "TEACHER",
        "Teacher model (distill)",
        "file",
        "Mode distill: a mapping model or a multi-region model whose outputs are the soft targets.",
        file_filter="Slidewise model (*.safetensors)",
        advanced=False,
    ),
    Option(
        "TEACHER_REGION",
        "Teacher region",
        "text",
        "Mode distill with a multi-region teacher: the region whose decoder teaches.",
    ),
    Option(
        "MASKS",
        "Masks (distill, optional)",
        "folder",
        "Mode distill: masks with the images' names; their labelled pixels add a hard loss.",
    ),
    Option(
        "DATASET_TYPE",
        "Dataset type",
        "choice",
        "auto: from the file types; or pairs, l4s_h5, geotiff as in Train mapping model.",
        choices=("auto", *DATASET_TYPES),
    ),
    *LABEL_READING,
    Option(
        "NORMALISATION",
        "Normalisation",
        "choice",
        "fit: per-band mean/std of the images; l4s: the Landslide4Sense constants; none. "
        "Mode distill always uses the teacher's.",
        choices=("fit", "l4s", "none"),
    ),
    Option("EPOCHS", "Epochs", "int", "Epochs; empty: 20.", minimum=1),
    Option("BATCH_SIZE", "Batch size", "int", "Chips per batch; empty: 16.", minimum=1),
    Option("LR", "Learning rate", "float", "Peak AdamW learning rate (cosine); empty: 0.001."),
    Option("WEIGHT_DECAY", "Weight decay", "float", "AdamW weight decay; empty: 0.05."),
    Option(
        "MASK_RATIO",
        "Mask ratio (MAE)",
        "float",
        "Share of hidden patches; empty: 0.75.",
        maximum=0.99,
    ),
    Option(
        "PATCH_SIZE",
        "Patch size (MAE)",
        "int",
        "Side of the hidden patches in pixels, a divisor of the chip size; empty: 16.",
        minimum=1,
    ),
    Option(
        "NORM_PIX",
        "Per-patch normalised targets (MAE)",
        "bool",
        "Reconstruct per-patch normalised pixels (MAE's norm_pix_loss).",
        default=False,
    ),
    Option(
        "CHIP_SIZE",
        "Chip size (pixels)",
        "int",
        "Chip side, a multiple of 32 and of the patch size; empty: 128.",
        minimum=32,
    ),
    Option("CHIPS_PER_EPOCH", "Chips per epoch", "int", "0 or empty: all chips."),
    Option("TEMPERATURE", "Temperature (distill)", "float", "Empty: 5.", minimum=0.05),
    Option(
        "LAMBDA",
        "Distillation weight",
        "float",
        "Weight of the soft targets; 1 - weight goes to the hard loss on labelled pixels; "
        "empty: 0.9.",
        maximum=1.0,
    ),
    Option("AUGMENT", "D4 augmentation", "bool", "Random flips and rotations.", default=True),
)


class PretrainEncoderAlgorithm(OptionAlgorithm):
    """Masked-autoencoder or distillation pre-training of an encoder on landslide imagery."""

    ALG_ID = "pretrainencoder"
    DISPLAY_NAME = "Pre-train encoder"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "pretrainencoder"
    SHORT_HELP = (
        "Pre-trains an encoder without labels on landslide imagery of any band count with a "
        "masked autoencoder (mask ratio 0.75 by default), or distils a trained mapping "
        "model's landslide outputs into it. The encoder file initialises Train mapping "
        "model, Add region to mapping model (new models) and Train detection model through "
        "their Encoder weights parameter, where it is loaded with strict key checking. The "
        "log reports the reconstruction loss before and after training against a zeros "
        "baseline (MAE) or the student-teacher agreement (distill)."
    )

    OPTIONS = (PRETRAIN_OPTIONS,)
    OUTPUT_LABEL = "Encoder file"
    OUTPUT_FILTER = "Slidewise encoder (*.safetensors)"
    OUTPUT_HELP = "The encoder weights (safetensors; task encoder) with bands and normalisation."
