"""slidewise:traindetection: a Faster R-CNN landslide detector with a feature pyramid."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.groups import RUNTIME_SEED
from slidewise.contract.specs.imagery import LABEL_READING
from slidewise.contract.specs.training import BATCH_SIZE, EPOCHS, LR, VALID_FRACTION

#: Annotation formats of the training data.
FORMATS = ("voc", "coco", "masks")
#: Frames of boxes whose annotation states another image size than the image file.
BOX_FRAMES = ("auto", "image", "annotation")

_BANDS = next(p for p in LABEL_READING if p.name == "BANDS")

SPEC = AlgorithmSpec(
    "traindetection",
    (
        Param(
            "FORMAT",
            "Annotation format",
            "choice",
            "voc: Pascal VOC folder (image + .xml of the same name); coco: a folder holding one "
            "COCO .json (images next to it or in images/); masks: a folder with images/ and "
            "masks/ (boxes from connected landslide components).",
            default="voc",
            choices=FORMATS,
        ),
        Param(
            "TRAIN",
            "Training data (folder)",
            "folder",
            "Training images with their boxes, in the chosen format.",
            required=True,
        ),
        Param(
            "VALID",
            "Validation data (folder)",
            "folder",
            "Optional validation images of the same format, used to select the epoch by mAP; "
            "otherwise a share of the training images is split off.",
        ),
        Param(
            "BACKBONE",
            "Backbone",
            "text",
            "resnet18, resnet34, resnet50, resnet101, resnet152, or timm:<name> (e.g. "
            "timm:efficientnet_b0); always with a feature pyramid; random start, no download.",
            default="resnet18",
        ),
        Param(
            "ENCODER_WEIGHTS",
            "Encoder weights",
            "file",
            "Backbone weights, e.g. from Pre-train encoder, loaded strictly (missing or "
            "unexpected keys are listed and refused).",
            file_filter="Slidewise encoder (*.safetensors)",
        ),
        Param(
            "LABEL_POLYGONS",
            "Landslide polygons",
            "polygons",
            "Optional: the training (and validation) folders hold georeferenced images and each "
            "polygon gives a box.",
            advanced=True,
        ),
        replace(
            VALID_FRACTION,
            help="Share of training images split off when no validation data is given.",
        ),
        Param(
            "BOX_COORDINATES",
            "Box coordinates",
            "choice",
            "When an annotation states another image size than the image file: auto (decide "
            "from the boxes), image (boxes in image pixels) or annotation (boxes in the stated "
            "size, scaled).",
            default="auto",
            choices=BOX_FRAMES,
            advanced=True,
        ),
        Param(
            "MIN_AREA",
            "Minimum component area",
            "int",
            "Format masks: smallest landslide component (8-connected) that becomes a box.",
            default=100,
            minimum=1,
            maximum=10**9,
            unit="px",
            advanced=True,
        ),
        replace(
            _BANDS, help="Image bands fed to the model (1-based numbers or names); empty: all."
        ),
        Param(
            "TRAINABLE_LAYERS",
            "Trainable backbone stages",
            "int",
            "Backbone stages trained, from the top.",
            default=5,
            minimum=0,
            maximum=5,
            advanced=True,
        ),
        replace(EPOCHS, default=10),
        replace(BATCH_SIZE, help="Images per step.", default=4, maximum=1024),
        replace(LR, help="Peak AdamW learning rate (warm-up, cosine decay).", default=2e-4),
        Param(
            "IMAGE_SIZE",
            "Image size",
            "int",
            "Shorter image side after the detector's resize, 0 or at least 32; 0: the median "
            "training image side, at least 448.",
            default=0,
            minimum=0,
            maximum=4096,
            unit="px",
            advanced=True,
        ),
        Param(
            "MAX_TRAIN_IMAGES",
            "Maximum training images",
            "int",
            "Train on a seeded random subset of this many images; 0: all.",
            default=0,
            minimum=0,
            maximum=10**9,
            advanced=True,
        ),
        Param(
            "MAX_VALID_IMAGES",
            "Maximum validation images",
            "int",
            "Validate on at most this many images; 0: all.",
            default=0,
            minimum=0,
            maximum=10**9,
            advanced=True,
        ),
        Param(
            "AUGMENT",
            "Augmentation",
            "bool",
            "Random flips and quarter turns of images and boxes.",
            default=True,
            advanced=True,
        ),
        RUNTIME_SEED,
        Param(
            "OUTPUT",
            "Model file",
            "output_file",
            "The detector (safetensors with JSON metadata: backbone, bands, normalisation, "
            "image size, validation mAP).",
            required=True,
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "OUTPUT_REPORT",
            "Validation report (HTML)",
            "output_file",
            "The selected model run on the validation images: mAP, precision, recall and F1 "
            "of boxes at the default score threshold, precision-recall and F1-threshold "
            "curves, a validation image with reference and detected boxes, the training "
            "curve and the inputs' hashes; a JSON of the figures is written next to it.",
            file_filter="HTML (*.html)",
            create_by_default=False,
        ),
    ),
)
