"""slidewise:pretrainencoder — self-supervised (MAE) or distilled encoder pre-training."""

from __future__ import annotations

from slidewise.contract.specs.pretrainencoder import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class PretrainEncoderAlgorithm(SlidewiseAlgorithm):
    """Masked-autoencoder or distillation pre-training of an encoder on landslide imagery."""

    ALG_ID = "pretrainencoder"
    DISPLAY_NAME = "Pre-train encoder"
    GROUP = "detection"
    ICON = "detection.svg"
    JOB = "pretrainencoder"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Pre-trains an encoder without labels on landslide imagery of any band count with a "
        "masked autoencoder (mask ratio 0.75 by default), or distils a trained mapping "
        "model's landslide outputs into it. The encoder file initialises Train mapping "
        "model, Add region to mapping model (new models) and Train detection model through "
        "their Encoder weights parameter, where it is loaded with strict key checking. The "
        "log reports the reconstruction loss before and after training against a zeros "
        "baseline (MAE) or the student-teacher agreement (distill)."
    )
