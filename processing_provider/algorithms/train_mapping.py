"""slidewise:trainmapping — train a landslide segmentation model."""

from __future__ import annotations

from slidewise.contract.specs.trainmapping import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class TrainMappingAlgorithm(SlidewiseAlgorithm):
    """Segmentation models (smp or residual U-Net) with model selection on validation."""

    ALG_ID = "trainmapping"
    DISPLAY_NAME = "Train mapping model"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "trainmapping"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Trains or fine-tunes a landslide segmentation model on imagery with landslide "
        "labels: image/mask pairs (PNG or TIFF, 0/1, 0/255 or colour masks), Landslide4Sense "
        "h5 patches, or GeoTIFF images with label rasters or landslide polygons. The model "
        "with the best validation score (landslide-class F1 by default) is kept; validation "
        "precision, recall, F1, IoU and MCC are logged per epoch and stored in the model "
        "file with the bands and normalisation, which mapping re-applies. The default recipe "
        "uses Dice + BCE, D4 augmentation and class-imbalance handling; l4s_baseline is the "
        "Landslide4Sense baseline (plain U-Net, cross-entropy, no augmentation)."
    )
