"""slidewise:traindetection — Faster R-CNN landslide detector with a feature pyramid."""

from __future__ import annotations

from slidewise.contract.specs.traindetection import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class TrainDetectionAlgorithm(SlidewiseAlgorithm):
    """torchvision Faster R-CNN with FPN; runs where torchvision's compiled ops are missing."""

    ALG_ID = "traindetection"
    DISPLAY_NAME = "Train detection model"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "traindetection"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Trains a Faster R-CNN landslide detector (torchvision) with a feature pyramid over a "
        "ResNet or timm backbone, so that small backbones see small landslides, on any number "
        "of input bands. Boxes come from Pascal VOC (the image size wins over the XML's), "
        "COCO JSON, or masks / polygons (connected components with a minimum area). The "
        "epoch with the best validation mAP@0.5 is kept; AMP is used on CUDA. On machines "
        "without torchvision's compiled operators, exact pure-PyTorch NMS and RoI-align are "
        "used."
    )
