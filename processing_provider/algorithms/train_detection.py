"""slidewise:traindetection — Faster R-CNN landslide detector with a feature pyramid."""

from __future__ import annotations

from slidewise.processing_provider.algorithms.options import Option, OptionAlgorithm

DETECTION_OPTIONS = (
    Option(
        "FORMAT",
        "Annotation format",
        "choice",
        "voc: Pascal VOC folder (image + .xml of the same name); coco: a folder holding one "
        "COCO .json (images next to it or in images/); masks: a folder with images/ and "
        "masks/ (boxes from connected landslide components).",
        choices=("voc", "coco", "masks"),
        advanced=False,
    ),
    Option(
        "TRAIN",
        "Training data (folder)",
        "folder",
        "Training images with their boxes, in the chosen format.",
        advanced=False,
        required=True,
    ),
    Option(
        "VALID",
        "Validation data (folder)",
        "folder",
        "Optional validation images of the same format, used to select the epoch by mAP; "
        "otherwise a share of the training images is split off.",
        advanced=False,
    ),
    Option(
        "BACKBONE",
        "Backbone",
        "text",
        "resnet18 (default), resnet34, resnet50, resnet101, resnet152, or timm:<name> (e.g. "
        "timm:efficientnet_b0); always with a feature pyramid; random start, no download.",
        advanced=False,
    ),
    Option(
        "ENCODER_WEIGHTS",
        "Encoder weights",
        "file",
        "Backbone weights, e.g. from Pre-train encoder, loaded strictly (missing or "
        "unexpected keys are listed and refused).",
        file_filter="Slidewise encoder (*.safetensors)",
        advanced=False,
    ),
    Option(
        "LABEL_POLYGONS",
        "Landslide polygons",
        "polygons",
        "Optional: the training (and validation) folders hold georeferenced images and each "
        "polygon gives a box.",
    ),
    Option(
        "VALID_FRACTION",
        "Validation share",
        "float",
        "Share of training images split off when no validation data is given; empty: 0.2.",
        maximum=0.9,
    ),
    Option(
        "BOX_COORDINATES",
        "Box coordinates",
        "choice",
        "When an annotation states another image size than the image file: auto (decide from "
        "the boxes), image (boxes in image pixels) or annotation (boxes in the stated size, "
        "scaled).",
        choices=("auto", "image", "annotation"),
    ),
    Option(
        "MIN_AREA",
        "Minimum component area (pixels)",
        "int",
        "Format masks: smallest landslide component that becomes a box; empty: 100.",
    ),
    Option("BANDS", "Bands", "text", "Image bands fed to the model (1-based numbers or names)."),
    Option(
        "TRAINABLE_LAYERS",
        "Trainable backbone stages",
        "int",
        "Backbone stages trained, from the top (0-5); empty: 5.",
        maximum=5,
    ),
    Option("EPOCHS", "Epochs", "int", "Training epochs; empty: 10.", minimum=1),
    Option("BATCH_SIZE", "Batch size", "int", "Images per step; empty: 4.", minimum=1),
    Option("LR", "Learning rate", "float", "Peak AdamW learning rate; empty: 0.0002."),
    Option(
        "IMAGE_SIZE",
        "Image size",
        "int",
        "Shorter image side after the detector's resize; 0 or empty: the median training "
        "image side, at least 448.",
    ),
    Option(
        "MAX_TRAIN_IMAGES",
        "Maximum training images",
        "int",
        "Train on a seeded random subset of this many images; 0 or empty: all.",
    ),
    Option(
        "MAX_VALID_IMAGES",
        "Maximum validation images",
        "int",
        "Validate on at most this many images; 0 or empty: all.",
    ),
    Option(
        "AUGMENT",
        "Augmentation",
        "bool",
        "Random flips and quarter turns of images and boxes.",
        default=True,
    ),
)


class TrainDetectionAlgorithm(OptionAlgorithm):
    """torchvision Faster R-CNN with FPN; runs where torchvision's compiled ops are missing."""

    ALG_ID = "traindetection"
    DISPLAY_NAME = "Train detection model"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "traindetection"
    SHORT_HELP = (
        "Trains a Faster R-CNN landslide detector (torchvision) with a feature pyramid over a "
        "ResNet or timm backbone, so that small backbones see small landslides, on any number "
        "of input bands. Boxes come from Pascal VOC (the image size wins over the XML's), "
        "COCO JSON, or masks / polygons (connected components with a minimum area). The "
        "epoch with the best validation mAP@0.5 is kept; AMP is used on CUDA. On machines "
        "without torchvision's compiled operators, exact pure-PyTorch NMS and RoI-align are "
        "used."
    )

    OPTIONS = (DETECTION_OPTIONS,)
    OUTPUT_LABEL = "Model file"
    OUTPUT_HELP = (
        "The detector (safetensors with JSON metadata: backbone, bands, normalisation, "
        "image size, validation mAP)."
    )
