"""slidewise:pretrainencoder: masked-autoencoder or distilled encoder pre-training."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.groups import RUNTIME_SEED
from slidewise.contract.specs.imagery import DATASET_TYPES, LABEL_READING, NORMALISATIONS
from slidewise.contract.specs.training import (
    AUGMENT,
    BATCH_SIZE,
    CHIPS_PER_EPOCH,
    EPOCHS,
    LR,
    WEIGHT_DECAY,
)

MODES = ("mae", "distill")
#: Dataset readers of the images: ``auto`` decides from the file types.
PRETRAIN_DATASET_TYPES = ("auto", *DATASET_TYPES)

SPEC = AlgorithmSpec(
    "pretrainencoder",
    (
        Param(
            "IMAGES",
            "Images (folder or file)",
            "folder",
            "Unlabelled landslide imagery: PNG/JPEG pictures, GeoTIFFs (any band count) or "
            "Landslide4Sense image_N.h5 files.",
            required=True,
        ),
        Param(
            "MODE",
            "Mode",
            "choice",
            "mae: masked-autoencoder pre-training (hide most patches, reconstruct them); "
            "distill: train the encoder to reproduce a trained teacher's landslide outputs "
            "(soft targets at a temperature).",
            default="mae",
            choices=MODES,
        ),
        Param(
            "BACKBONE",
            "Encoder",
            "text",
            "segmentation-models-pytorch encoder, e.g. resnet18 or resnet34; ResNets also fit "
            "the detection backbones of Train detection model.",
            default="resnet18",
        ),
        Param(
            "TEACHER",
            "Teacher model (distill)",
            "file",
            "Mode distill: a mapping model or a multi-region model whose outputs are the soft "
            "targets.",
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "TEACHER_REGION",
            "Teacher region",
            "text",
            "Mode distill with a multi-region teacher: the region whose decoder teaches.",
            advanced=True,
        ),
        Param(
            "MASKS",
            "Masks (distill, optional)",
            "folder",
            "Mode distill: masks with the images' names; their labelled pixels add a hard loss.",
            advanced=True,
        ),
        Param(
            "DATASET_TYPE",
            "Dataset type",
            "choice",
            "auto: from the file types; or pairs, l4s_h5, geotiff as in Train mapping model.",
            default="auto",
            choices=PRETRAIN_DATASET_TYPES,
            advanced=True,
        ),
        *LABEL_READING,
        Param(
            "NORMALISATION",
            "Normalisation",
            "choice",
            "fit: per-band mean/std of the images; l4s: the Landslide4Sense constants; none. "
            "Mode distill always uses the teacher's.",
            default="fit",
            choices=NORMALISATIONS,
            advanced=True,
        ),
        replace(EPOCHS, help="Passes over the chips."),
        BATCH_SIZE,
        replace(LR, help="Peak AdamW learning rate (cosine decay)."),
        WEIGHT_DECAY,
        Param(
            "MASK_RATIO",
            "Mask ratio (MAE)",
            "float",
            "Share of hidden patches.",
            default=0.75,
            minimum=0.05,
            maximum=0.95,
            advanced=True,
        ),
        Param(
            "PATCH_SIZE",
            "Patch size (MAE)",
            "int",
            "Side of the hidden patches, a divisor of the chip size.",
            default=16,
            minimum=4,
            maximum=512,
            unit="px",
            advanced=True,
        ),
        Param(
            "NORM_PIX",
            "Per-patch normalised targets (MAE)",
            "bool",
            "Reconstruct per-patch normalised pixels (MAE's norm_pix_loss).",
            default=False,
            advanced=True,
        ),
        Param(
            "CHIP_SIZE",
            "Chip size",
            "int",
            "Chip side, a multiple of 32 and of the patch size; smaller images are padded.",
            default=128,
            minimum=32,
            maximum=8192,
            unit="px",
            advanced=True,
        ),
        replace(CHIPS_PER_EPOCH, help="Chips drawn per epoch; 0: all chips."),
        Param(
            "TEMPERATURE",
            "Temperature (distill)",
            "float",
            "Distillation temperature of the soft targets.",
            default=5.0,
            minimum=0.05,
            maximum=100.0,
            advanced=True,
        ),
        Param(
            "LAMBDA",
            "Distillation weight",
            "float",
            "Weight of the soft targets; 1 - weight goes to the hard loss on labelled pixels.",
            default=0.9,
            minimum=0.0,
            maximum=1.0,
            advanced=True,
        ),
        AUGMENT,
        RUNTIME_SEED,
        Param(
            "OUTPUT",
            "Encoder file",
            "output_file",
            "The encoder weights (safetensors; task encoder) with bands and normalisation.",
            required=True,
            file_filter="Slidewise encoder (*.safetensors)",
        ),
    ),
)
